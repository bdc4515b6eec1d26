package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/zcluster/zcluster/internal/devstack/embedetcd"
	"github.com/zcluster/zcluster/internal/testonly/testkit"
)

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// binResult is what a run of the built binary printed.
type binResult struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

// runBinary runs the built zcluster with args from an empty temporary
// directory, as a user would from anywhere, with no ZINX_CONFIG_FILE_PATH
// and no ZC_* variable in its environment.
func runBinary(t *testing.T, timeout time.Duration, args ...string) binResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, testBinary(t), args...)
	cmd.Dir = t.TempDir()
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ZINX_CONFIG_FILE_PATH=") && !strings.HasPrefix(kv, "ZC_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := binResult{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	if ctx.Err() != nil {
		t.Fatalf("zcluster %s: still running after %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), timeout, r.stdout, r.stderr)
	}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

// noZinxComplaint fails if zinx's config-file error shows in r.
func noZinxComplaint(t *testing.T, what string, r binResult) {
	t.Helper()
	for _, out := range []string{r.stdout, r.stderr} {
		if strings.Contains(out, "zinx.json") || strings.Contains(out, "is not exist") || strings.Contains(out, "zconf.go") {
			t.Errorf("%s: zinx complained about its config file:\n%s", what, out)
		}
	}
}

// wantOneLineFailure checks r is a failure reported as exactly one line on
// stderr that contains every one of wants.
func wantOneLineFailure(t *testing.T, what string, r binResult, wants ...string) {
	t.Helper()
	if r.code == 0 {
		t.Errorf("%s: exit 0, want a failure", what)
	}
	if strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, "zcluster: ") {
		t.Errorf("%s: stderr is not one line:\n%s", what, r.stderr)
	}
	for _, w := range wants {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("%s: stderr %q lacks %q", what, r.stderr, w)
		}
	}
}

// TestBinaryFromTempDir: the built binary, run from a directory without
// conf/zinx.json and without ZINX_CONFIG_FILE_PATH, prints no zinx
// complaint, neither for `version` nor for commands that go on to use zinx.
func TestBinaryFromTempDir(t *testing.T) {
	r := runBinary(t, time.Minute, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "zcluster ") {
		t.Fatalf("version: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	noZinxComplaint(t, "version", r)
	if r.stderr != "" {
		t.Errorf("version wrote to stderr: %q", r.stderr)
	}
	r = runBinary(t, time.Minute, "chat", "--gate", closedAddr(t), "--user", "zed")
	noZinxComplaint(t, "chat to a closed port", r)
	wantOneLineFailure(t, "chat to a closed port", r, "connection refused")
}

// TestStartupErrorsNameTheCause: a node whose etcd or Redis cannot be
// reached exits with one line naming the store and the dial error
// (connection refused), not only "context deadline exceeded", and without
// go-redis's own raw log lines.
func TestStartupErrorsNameTheCause(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the etcd dial timeout")
	}
	node := func(etcd, redis string) []string {
		return []string{"gate", "--id", "gate-t", "--secret", "S", "--etcd", etcd, "--redis", redis,
			"--listen", testkit.FreeAddr(t), "--relay", testkit.FreeAddr(t)}
	}
	deadEtcd := closedAddr(t)
	r := runBinary(t, time.Minute, node(deadEtcd, closedAddr(t))...)
	noZinxComplaint(t, "gate with etcd down", r)
	wantOneLineFailure(t, "gate with etcd down", r, "etcd at "+deadEtcd+" not reachable", "connect: connection refused")

	r = runBinary(t, time.Minute, "routes", "--etcd", deadEtcd)
	wantOneLineFailure(t, "routes with etcd down", r, "etcd at "+deadEtcd+" not reachable", "connect: connection refused")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	etcd, err := embedetcd.Start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	deadRedis := closedAddr(t)
	r = runBinary(t, time.Minute, node(etcd.Endpoints()[0], deadRedis)...)
	noZinxComplaint(t, "gate with redis down", r)
	wantOneLineFailure(t, "gate with redis down", r, "redis at "+deadRedis+" not reachable", "connect: connection refused")
	if strings.Contains(r.stderr, "pool.go") {
		t.Errorf("go-redis logged raw lines:\n%s", r.stderr)
	}
}
