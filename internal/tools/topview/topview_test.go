package topview

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

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

// liveCluster starts an embedded etcd, a Redis, gates gate-1 and gate-2 and
// backends im-1, im-2 and echo-1 running the chat app, in this process.
func liveCluster(t *testing.T) (Source, []*gate.Gate) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := embedetcd.Start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	redisAddr := testkit.Redis(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	clients := func() (*clientv3.Client, redis.UniversalClient) {
		cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
		t.Cleanup(func() { _ = rdb.Close(); _ = cli.Close() })
		return cli, rdb
	}
	secret := []byte("topview-test")
	var gates []*gate.Gate
	for _, id := range []string{"gate-1", "gate-2"} {
		cli, rdb := clients()
		g, err := gate.New(gate.Config{
			Node: cluster.Node{
				ID:          id,
				RelayListen: "127.0.0.1:0",
				Etcd:        cli,
				Redis:       rdb,
				Secret:      secret,
				TTL:         5 * time.Second,
				Version:     "v-test",
				Logger:      log,
			},
			ClientListen: "127.0.0.1:0",
			WSListen:     "127.0.0.1:0",
		})
		if err != nil {
			t.Fatal(err)
		}
		chat.SetupGate(g)
		if err := g.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = g.Shutdown(sctx)
		})
		gates = append(gates, g)
	}
	for _, nb := range []struct{ id, group string }{{"im-1", "im"}, {"im-2", "im"}, {"echo-1", "echo"}} {
		cli, rdb := clients()
		b, err := backend.New(backend.Config{
			Node: cluster.Node{
				ID:          nb.id,
				RelayListen: "127.0.0.1:0",
				Etcd:        cli,
				Redis:       rdb,
				Secret:      secret,
				TTL:         5 * time.Second,
				Version:     "v-test",
				Logger:      log,
			},
			Group: nb.group,
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
		t.Cleanup(func() {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = b.Shutdown(sctx)
		})
	}
	cli, rdb := clients()
	return Source{Etcd: cli, Redis: rdb}, gates
}

// login logs user in through addr: a TCP address, or a ws:// URL.
func login(t *testing.T, addr, user string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var (
		conn *zclient.Conn
		err  error
	)
	if strings.HasPrefix(addr, "ws://") {
		conn, err = zclient.DialWS(ctx, addr, zclient.WSOptions{})
	} else {
		conn, err = zclient.Dial(ctx, addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if err := conn.Send(chat.MsgLogin, []byte(user)); err != nil {
		t.Fatal(err)
	}
	f, _, err := conn.Expect(ctx, chat.MsgLogin)
	if err != nil || !strings.Contains(string(f.Payload), `"ok":true`) {
		t.Fatalf("login %s: %v %s", user, err, f.Payload)
	}
}

func read(t *testing.T, src Source) *Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Read(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestTopLiveCluster reads a live cluster with two users on gate-1 (one
// over TCP, one over WebSocket) and one on gate-2, and checks the table and
// the JSON a user of `zcluster top` sees.
func TestTopLiveCluster(t *testing.T) {
	src, gates := liveCluster(t)
	login(t, gates[0].ListenAddr(), "alice")
	login(t, gates[0].WSURL(), "carol")
	login(t, gates[1].ListenAddr(), "bob")

	// Gates publish their connection counts every few seconds.
	var s *Snapshot
	testkit.CheckFor(t, 15*time.Second, 200*time.Millisecond, func() error {
		s = read(t, src)
		if got := FormatConns(s.Nodes[0].Conns) + " / " + FormatConns(s.Nodes[1].Conns); got != "tcp 1, ws 1 / tcp 1, ws 0" {
			return fmt.Errorf("connections by transport %q", got)
		}
		return nil
	})
	var buf bytes.Buffer
	if err := s.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	table := buf.String()
	t.Logf("zcluster top:\n%s", table)
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 7 {
		t.Fatalf("want header, 5 node rows and a summary; got %d lines", len(lines))
	}
	for _, col := range []string{"GROUP", "NODE", "KIND", "RELAY", "CLIENT", "ROUTES", "SESSIONS", "CONNS", "LEASE", "VERSION", "UPTIME"} {
		if !strings.Contains(lines[0], col) {
			t.Errorf("header %q has no %s", lines[0], col)
		}
	}
	// Gates first, then backends by group and id.
	rows := []*regexp.Regexp{
		regexp.MustCompile(`^gate\s+gate-1\s+gate\s+` + regexp.QuoteMeta(gates[0].RelayAddr()) + `\s+` + regexp.QuoteMeta(gates[0].ClientAddr()) + `\s+1 login\s+2\s+tcp 1, ws 1\s+[1-5]s\s+v-test\s+\d+s$`),
		regexp.MustCompile(`^gate\s+gate-2\s+gate\s+\S+\s+` + regexp.QuoteMeta(gates[1].ClientAddr()) + `\s+1 login\s+1\s+tcp 1, ws 0\s+[1-5]s\s+v-test\s+\d+s$`),
		regexp.MustCompile(`^echo\s+echo-1\s+backend\s+127\.0\.0\.1:\d+\s+-\s+-\s+-\s+-\s+[1-5]s\s+v-test\s+\d+s$`),
		regexp.MustCompile(`^im\s+im-1\s+backend\s+127\.0\.0\.1:\d+\s+-\s+2 send, 3 chain-echo, 4 echo, 5 broadcast, 6 reliable-send\s+-\s+-\s+[1-5]s\s+v-test\s+\d+s$`),
		regexp.MustCompile(`^im\s+im-2\s+backend\s+`),
	}
	for i, re := range rows {
		if !re.MatchString(lines[i+1]) {
			t.Errorf("row %d = %q, want %s", i+1, lines[i+1], re)
		}
	}
	if !strings.HasPrefix(lines[6], "5 nodes (2 gates, 3 backends), 3 sessions at ") {
		t.Errorf("summary = %q", lines[6])
	}

	// The JSON carries the same facts, typed.
	buf.Reset()
	if err := WriteJSON(&buf, s); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Nodes []struct {
			ID       string `json:"id"`
			Kind     string `json:"kind"`
			Sessions *int   `json:"sessions"`
			LeaseTTL int64  `json:"lease_ttl_seconds"`
			Routes   []struct {
				MsgID uint32 `json:"msg_id"`
				Name  string `json:"name"`
			} `json:"routes"`
			Version string `json:"version"`
		} `json:"nodes"`
		Routes []struct {
			MsgID  uint32 `json:"msg_id"`
			Groups []struct {
				Group string   `json:"group"`
				Nodes []string `json:"nodes"`
			} `json:"groups"`
		} `json:"routes"`
		Sessions int `json:"sessions"`
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	if len(got.Nodes) != 5 || got.Sessions != 3 {
		t.Fatalf("json: %d nodes, %d sessions\n%s", len(got.Nodes), got.Sessions, buf.String())
	}
	g1 := got.Nodes[0]
	if g1.ID != "gate-1" || g1.Sessions == nil || *g1.Sessions != 2 || g1.LeaseTTL < 1 || g1.LeaseTTL > 5 ||
		len(g1.Routes) != 1 || g1.Routes[0].Name != "login" || g1.Version != "v-test" {
		t.Errorf("json gate-1 = %+v", g1)
	}
	if got.Nodes[2].Sessions != nil {
		t.Errorf("json %s has sessions; only gates own sessions", got.Nodes[2].ID)
	}
	if len(got.Routes) != 6 || got.Routes[1].MsgID != 2 || got.Routes[1].Groups[0].Group != "im" ||
		strings.Join(got.Routes[1].Groups[0].Nodes, ",") != "im-1,im-2" {
		t.Errorf("json routes = %+v", got.Routes)
	}
}

// TestRoutesLiveCluster checks the `zcluster routes` table: msgID -> group
// -> nodes.
func TestRoutesLiveCluster(t *testing.T) {
	src, _ := liveCluster(t)
	src.Redis = nil // routes needs etcd only
	s := read(t, src)
	if s.Sessions != -1 {
		t.Errorf("sessions = %d without Redis, want -1", s.Sessions)
	}
	var buf bytes.Buffer
	if err := s.WriteRoutes(&buf); err != nil {
		t.Fatal(err)
	}
	t.Logf("zcluster routes:\n%s", buf.String())
	want := []string{
		`^MSGID\s+NAME\s+GROUP\s+NODES$`,
		`^1\s+login\s+gate\s+gate-1, gate-2$`,
		`^2\s+send\s+im\s+im-1, im-2$`,
		`^3\s+chain-echo\s+im\s+im-1, im-2$`,
		`^4\s+echo\s+im\s+im-1, im-2$`,
		`^5\s+broadcast\s+im\s+im-1, im-2$`,
		`^6\s+reliable-send\s+im\s+im-1, im-2$`,
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d", len(lines), len(want))
	}
	for i, w := range want {
		if !regexp.MustCompile(w).MatchString(lines[i]) {
			t.Errorf("line %d = %q, want %s", i, lines[i], w)
		}
	}
}
