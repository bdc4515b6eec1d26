package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/internal/testonly/testkit/chatkit"
)

// lineLog is a slog.Handler keeping "LEVEL msg key=value..." lines.
type lineLog struct {
	mu    *sync.Mutex
	lines *[]string
	attrs string
	level slog.Level
}

func newLineLog(level slog.Level) *lineLog {
	return &lineLog{mu: &sync.Mutex{}, lines: new([]string), level: level}
}

func (h *lineLog) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *lineLog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s%s", r.Level, r.Message, h.attrs)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	h.mu.Lock()
	*h.lines = append(*h.lines, b.String())
	h.mu.Unlock()
	return nil
}

func (h *lineLog) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	for _, a := range as {
		c.attrs += fmt.Sprintf(" %s=%v", a.Key, a.Value)
	}
	return &c
}

func (h *lineLog) WithGroup(string) slog.Handler { return h }

func (h *lineLog) snapshot() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), *h.lines...)
}

// TestLifecycleLogAndQuietShutdown: at info, a node logs one line per
// lifecycle event (registered once, stopped once) and nothing per relay
// link; a stopping node opens no new link (it used to dial every peer only
// to announce it was leaving, and close the link at once).
func TestLifecycleLogAndQuietShutdown(t *testing.T) {
	c := newCluster(t)
	logs := newLineLog(slog.LevelInfo)
	c.log = slog.New(logs)
	g := c.startGate("gate-1")
	im1 := c.startBackend("im-1", chat.GroupIM)
	im2 := c.startBackend("im-2", chat.GroupIM)
	echo := c.startBackend("echo-1", chat.GroupEcho)
	c.waitGroupSize(chat.GroupIM, 2, 10*time.Second)
	c.waitGroupSize(chat.GroupEcho, 1, 10*time.Second)

	// Traffic through the gate to im and from im to echo opens links.
	conn := chatkit.Dial(t, g.ListenAddr())
	chatkit.Login(t, conn, "zed")
	for i := range 8 {
		_ = conn.Send(chat.MsgChainEcho, []byte(fmt.Sprintf("ping %d", i)))
		chatkit.Expect(t, conn, chat.MsgChainEcho)
	}
	// A second gate only receives (a push to its user): it has no link to
	// im, im has one to it. Its clean stop is no failure on im's side.
	g2 := c.startGate("gate-2")
	amy := chatkit.Dial(t, g2.ListenAddr())
	chatkit.Login(t, amy, "amy")
	if r := sendChat(t, conn, "amy", "hello"); !r.OK {
		t.Fatalf("send to amy: %+v", r)
	}
	chatkit.Expect(t, amy, chat.MsgDelivered)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := g2.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, b := range []*backend.Backend{im1, im2, echo} {
		before := b.RelayStats()
		if err := b.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		after := b.RelayStats()
		if after.LinksUp != before.LinksUp || after.DialFailures != before.DialFailures {
			t.Errorf("%s opened links while stopping: links up %d -> %d, dial failures %d -> %d",
				b.ID(), before.LinksUp, after.LinksUp, before.DialFailures, after.DialFailures)
		}
	}
	if err := g.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	lines := logs.snapshot()
	for _, l := range lines {
		if strings.Contains(strings.ToLower(l), "link") {
			t.Errorf("per-link line at info, or a link failure during clean stops: %s", l)
		}
	}
	for _, id := range []string{"gate-1", "gate-2", "im-1", "im-2", "echo-1"} {
		var registered, stopped int
		for _, l := range lines {
			if !strings.Contains(l, "node="+id+" ") && !strings.HasSuffix(l, "node="+id) {
				continue
			}
			if strings.Contains(l, "registered") && !strings.Contains(l, "deregistered") {
				registered++
			}
			if strings.Contains(l, " stopped") {
				stopped++
			}
		}
		if registered != 1 || stopped != 1 {
			t.Errorf("%s: %d 'registered' and %d 'stopped' lines at info, want 1 each", id, registered, stopped)
		}
	}
	if t.Failed() {
		t.Logf("info lines:\n%s", strings.Join(lines, "\n"))
	}
}
