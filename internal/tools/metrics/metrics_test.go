package metrics

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/cluster"
	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/internal/devstack/embedetcd"
	"github.com/zcluster/zcluster/internal/testonly/testkit"
	"github.com/zcluster/zcluster/internal/tools/zclient"
)

// scrape returns the value of the series name{labels...} (labels in the
// exposition's sorted order, e.g. `group="im",msg_id="4"`), or 0 when the
// series is absent.
func scrape(t *testing.T, url, name, labels string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		if labels != "" && !strings.Contains(line, labels) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		return v
	}
	return 0
}

// TestMetricsLiveNodes runs a gate and an im backend with metrics, as
// `zcluster gate --http` does, scrapes their /metrics, sends messages and
// checks the counters move; /healthz and /readyz answer.
func TestMetricsLiveNodes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := embedetcd.Start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	redisAddr := testkit.Redis(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	clients := func(m *Metrics) (*clientv3.Client, redis.UniversalClient) {
		cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 5 * time.Second,
			Logger: zap.NewNop(), DialOptions: m.EtcdDialOptions()})
		if err != nil {
			t.Fatal(err)
		}
		rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
		rdb.AddHook(m.RedisHook())
		t.Cleanup(func() { _ = rdb.Close(); _ = cli.Close() })
		return cli, rdb
	}
	stop := func(shutdown func(context.Context) error) {
		t.Cleanup(func() {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = shutdown(sctx)
		})
	}

	gm := NewGate(prometheus.Labels{"node": "gate-1"})
	started := false
	gsrv := httptest.NewServer(gm.Handler(HandlerOptions{Ready: func(context.Context) error {
		if !started {
			return errors.New("starting")
		}
		return nil
	}}))
	t.Cleanup(gsrv.Close)
	if code, body := get(t, gsrv.URL+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "starting") {
		t.Fatalf("/readyz before start: %d %q", code, body)
	}
	if code, _ := get(t, gsrv.URL+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}

	cli, rdb := clients(gm)
	g, err := gate.New(gate.Config{
		Node: cluster.Node{
			ID:          "gate-1",
			RelayListen: "127.0.0.1:0",
			Etcd:        cli,
			Redis:       rdb,
			Secret:      []byte("s"),
			TTL:         5 * time.Second,
			Logger:      log,
		},
		ClientListen: "127.0.0.1:0",
		WSListen:     "127.0.0.1:0",
		Observer:     gm.Gate(),
	})
	if err != nil {
		t.Fatal(err)
	}
	chat.SetupGate(g)
	if err := g.Start(ctx); err != nil {
		t.Fatal(err)
	}
	stop(g.Shutdown)
	gm.SetGate(g)
	started = true

	bm := NewBackend(prometheus.Labels{"node": "im-1"})
	bsrv := httptest.NewServer(bm.Handler(HandlerOptions{}))
	t.Cleanup(bsrv.Close)
	cli, rdb = clients(bm)
	b, err := backend.New(backend.Config{
		Node: cluster.Node{
			ID:          "im-1",
			RelayListen: "127.0.0.1:0",
			Etcd:        cli,
			Redis:       rdb,
			Secret:      []byte("s"),
			TTL:         5 * time.Second,
			Logger:      log,
		},
		Group:    "im",
		Observer: bm.Backend(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := chat.SetupBackend(b); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	stop(b.Shutdown)
	bm.SetBackend(b)
	testkit.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if len(g.Topology().Nodes("im")) != 1 {
			return errors.New("gate does not see im-1 yet")
		}
		return nil
	})
	if code, body := get(t, gsrv.URL+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz after start: %d %q", code, body)
	}

	gurl, burl := gsrv.URL+"/metrics", bsrv.URL+"/metrics"
	if v := scrape(t, gurl, "zcluster_registered", ""); v != 1 {
		t.Errorf("zcluster_registered = %v, want 1", v)
	}
	echoIn := `group="im",msg_id="4"`
	if v := scrape(t, gurl, "zcluster_messages_in_total", echoIn); v != 0 {
		t.Fatalf("messages in before any traffic = %v", v)
	}

	opened := scrape(t, gurl, "zcluster_client_connections_opened_total", `transport="tcp"`)
	conn, err := zclient.Dial(ctx, g.ListenAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Send(chat.MsgLogin, []byte("alice")); err != nil {
		t.Fatal(err)
	}
	wsConn, err := zclient.DialWS(ctx, g.WSURL(), zclient.WSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer wsConn.Close()
	if _, _, err := conn.Expect(ctx, chat.MsgLogin); err != nil {
		t.Fatal(err)
	}
	const n = 5
	for range n {
		if err := conn.Send(chat.MsgEcho, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := conn.Expect(ctx, chat.MsgEcho); err != nil {
			t.Fatal(err)
		}
	}
	if err := conn.Send(777, nil); err != nil { // no route: an error frame
		t.Fatal(err)
	}
	if _, _, err := conn.Expect(ctx, chat.MsgError); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		url, name, labels string
		want              float64
	}{
		{gurl, "zcluster_client_connections", `transport="tcp"`, 1},
		{gurl, "zcluster_client_connections", `transport="ws"`, 1},
		{gurl, "zcluster_client_connections", `transport="kcp"`, 0},
		{gurl, "zcluster_client_connections_opened_total", `transport="tcp"`, opened + 1},
		{gurl, "zcluster_client_connections_opened_total", `transport="ws"`, 1},
		{gurl, "zcluster_logins_total", "", 1},
		{gurl, "zcluster_sessions", "", 2},
		{gurl, "zcluster_sessions_logged_in", "", 1},
		{gurl, "zcluster_messages_in_total", `group="gate",msg_id="1"`, 1},
		{gurl, "zcluster_messages_in_total", echoIn, n},
		{gurl, "zcluster_messages_out_total", `msg_id="4"`, n},
		{gurl, "zcluster_messages_in_total", `group="",msg_id="777"`, 1},
		{gurl, "zcluster_error_frames_total", `msg_id="777"`, 1},
		{gurl, "zcluster_relay_links", "", 1},
		{gurl, "zcluster_relay_envelopes_sent_total", "", n},
		{burl, "zcluster_backend_messages_total", `kind="message",msg_id="4",node="im-1",result="ok"`, n},
		{burl, "zcluster_backend_handler_seconds_count", `msg_id="4"`, n},
		{burl, "zcluster_relay_envelopes_received_total", "", n},
		{burl, "zcluster_lease_reregistrations_total", "", 0},
	} {
		if got := scrape(t, c.url, c.name, c.labels); got != c.want {
			t.Errorf("%s{%s} = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// The store clients were timed: Redis (the login's scripts) and etcd.
	if v := scrape(t, gurl, "zcluster_redis_call_seconds_count", `result="ok"`); v < 1 {
		t.Errorf("no Redis call timed: %v", v)
	}
	if v := scrape(t, gurl, "zcluster_etcd_call_seconds_count", `result="OK"`); v < 1 {
		t.Errorf("no etcd call timed: %v", v)
	}
	if v := scrape(t, gurl, "go_goroutines", ""); v < 1 {
		t.Errorf("go runtime metrics missing")
	}
	// Each role exposes its own series only: nothing stuck at 0.
	_, gbody := get(t, gurl)
	_, bbody := get(t, burl)
	for _, name := range gateOnlySeries {
		if strings.Contains(bbody, "\n"+name) {
			t.Errorf("backend /metrics has the gate series %s", name)
		}
	}
	for _, name := range backendOnlySeries {
		if strings.Contains(gbody, "\n"+name) {
			t.Errorf("gate /metrics has the backend series %s", name)
		}
	}
	if !strings.Contains(bbody, "\nzcluster_backend_queued") || !strings.Contains(bbody, "\nzcluster_inbox_pending_bytes") || !strings.Contains(gbody, "\nzcluster_pending_requests") {
		t.Errorf("a role's own status series is missing")
	}
}

// gateOnlySeries and backendOnlySeries are the series of one role (the list
// in docs/operations.md).
var (
	gateOnlySeries = []string{"zcluster_client_connections", "zcluster_client_connections_opened_total",
		"zcluster_logins_total", "zcluster_kicks_total", "zcluster_messages_in_total", "zcluster_messages_out_total",
		"zcluster_error_frames_total", "zcluster_sessions", "zcluster_sessions_logged_in", "zcluster_pending_requests"}
	backendOnlySeries = []string{"zcluster_backend_messages_total", "zcluster_backend_handler_seconds", "zcluster_backend_queued", "zcluster_backend_busy_total",
		"zcluster_inbox_appends_total", "zcluster_inbox_append_failures_total", "zcluster_inbox_busy_total", "zcluster_inbox_pending_bytes",
		"zcluster_inbox_redis_calls_total", "zcluster_inbox_append_scripts_total"}
)

// TestRoleSeries: fed every gate and backend event, a gate's registry has
// no backend series and a backend's no gate series, while New (both roles)
// has them all. (The status series need a started node: see
// TestMetricsLiveNodes.)
func TestRoleSeries(t *testing.T) {
	gather := func(m *Metrics) map[string]bool {
		g, b := m.Gate(), m.Backend()
		g.ConnOpened("tcp")
		g.LoggedIn()
		g.Kicked()
		g.MessageIn(4, "im")
		g.MessageOut(4)
		g.ErrorFrame(777)
		b.Handled(4, false, time.Millisecond, nil)
		mfs, err := m.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, mf := range mfs {
			got[mf.GetName()] = true
		}
		return got
	}
	gate, back, all := gather(NewGate(nil)), gather(NewBackend(nil)), gather(New(nil))
	statusOnly := map[string]bool{"zcluster_sessions": true, "zcluster_sessions_logged_in": true,
		"zcluster_pending_requests": true, "zcluster_backend_queued": true, "zcluster_backend_busy_total": true,
		"zcluster_inbox_appends_total": true, "zcluster_inbox_append_failures_total": true, "zcluster_inbox_busy_total": true,
		"zcluster_inbox_pending_bytes": true, "zcluster_inbox_redis_calls_total": true, "zcluster_inbox_append_scripts_total": true}
	for _, n := range gateOnlySeries {
		if statusOnly[n] {
			continue
		}
		if !gate[n] || back[n] || !all[n] {
			t.Errorf("%s: gate %v, backend %v, both %v; want gate only", n, gate[n], back[n], all[n])
		}
	}
	for _, n := range backendOnlySeries {
		if statusOnly[n] {
			continue
		}
		if gate[n] || !back[n] || !all[n] {
			t.Errorf("%s: gate %v, backend %v, both %v; want backend only", n, gate[n], back[n], all[n])
		}
	}
	if !gate["go_goroutines"] || !back["go_goroutines"] {
		t.Errorf("runtime series missing on a role")
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestPprofFlag checks /debug/pprof/ is served only when asked for.
func TestPprofFlag(t *testing.T) {
	m := New(nil)
	for _, on := range []bool{false, true} {
		srv := httptest.NewServer(m.Handler(HandlerOptions{Pprof: on}))
		code, _ := get(t, srv.URL+"/debug/pprof/")
		srv.Close()
		if want := map[bool]int{false: http.StatusNotFound, true: http.StatusOK}[on]; code != want {
			t.Errorf("pprof %v: /debug/pprof/ = %d, want %d", on, code, want)
		}
	}
}

// TestObserverNoAllocs checks the per-message hooks do not allocate once a
// msgID has been seen.
func TestObserverNoAllocs(t *testing.T) {
	m := New(nil)
	g, b := m.Gate(), m.Backend()
	g.MessageIn(1000, "im")
	g.MessageOut(1000)
	b.Handled(1000, false, time.Millisecond, nil)
	allocs := testing.AllocsPerRun(1000, func() {
		g.MessageIn(1000, "im")
		g.MessageOut(1000)
		b.Handled(1000, false, time.Millisecond, nil)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per message, want 0", allocs)
	}
}

// TestMsgIDCardinalityBounded checks that clients sending many distinct
// msgIDs cannot create unbounded series.
func TestMsgIDCardinalityBounded(t *testing.T) {
	m := New(nil)
	g := m.Gate()
	for id := range uint32(maxMsgIDs * 3) {
		g.MessageIn(id, "")
	}
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "zcluster_messages_in_total" {
			if n := len(mf.GetMetric()); n > maxMsgIDs+1 {
				t.Fatalf("%d series, want at most %d", n, maxMsgIDs+1)
			}
			return
		}
	}
	t.Fatal("zcluster_messages_in_total not gathered")
}
