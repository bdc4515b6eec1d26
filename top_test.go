package zcluster

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/zcluster/zcluster/internal/devstack/embedetcd"
	"github.com/zcluster/zcluster/internal/testonly/testkit"
	"github.com/zcluster/zcluster/internal/tools/topview"
)

// TestTopWatch runs `zcluster top --watch` against an empty cluster: it
// redraws in place (ANSI clear before each table) until interrupted, then
// exits 0. The table itself is covered by internal/tools/topview's tests.
func TestTopWatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := embedetcd.Start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	redisAddr := testkit.Redis(t)

	var out, errb bytes.Buffer
	wctx, stop := context.WithCancel(ctx)
	done := make(chan int, 1)
	go func() {
		done <- run(wctx, []string{"top", "--watch", "--interval", "100ms",
			"--etcd", strings.Join(e.Endpoints(), ","), "--redis", redisAddr},
			envMap(nil), strings.NewReader(""), &out, &errb)
	}()
	// Let it redraw a few times; only the count of redraws is checked, so
	// a slow machine just redraws less often.
	time.Sleep(700 * time.Millisecond)
	stop()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("top --watch: exit %d: %s", code, errb.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("top --watch did not stop when interrupted")
	}
	if n := strings.Count(out.String(), topview.ClearScreen); n < 2 {
		t.Fatalf("%d redraws, want at least 2:\n%q", n, out.String())
	}
	if !strings.Contains(out.String(), "0 nodes (0 gates, 0 backends), 0 sessions") {
		t.Fatalf("output:\n%s", out.String())
	}

	// routes and top -o json on the same (empty) cluster.
	code, rout, rerr := runCLI(t, nil, "routes", "--etcd", strings.Join(e.Endpoints(), ","))
	if code != 0 || !strings.Contains(rout, "no routes registered") {
		t.Fatalf("routes: exit %d %q %q", code, rout, rerr)
	}
	code, jout, jerr := runCLI(t, nil, "top", "-o", "json", "--etcd", strings.Join(e.Endpoints(), ","), "--redis", redisAddr)
	if code != 0 || !strings.Contains(jout, `"sessions": 0`) {
		t.Fatalf("top -o json: exit %d %q %q", code, jout, jerr)
	}
}
