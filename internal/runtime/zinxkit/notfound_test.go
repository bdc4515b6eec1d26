package zinxkit

import (
	"context"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aceld/zinx/zlog"

	"github.com/zcluster/zcluster/internal/runtime/frame"
)

// notFound counts the log lines of zinx's router for unknown msgIDs ("api
// msgID = N is not FOUND!"), seen through the slog default that zinxkit
// hands zinx's logger to (installed before any server starts).
var notFound atomic.Int64

type notFoundCounter struct{}

func (notFoundCounter) Enabled(context.Context, slog.Level) bool { return true }
func (notFoundCounter) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "is not FOUND") {
		notFound.Add(1)
	}
	return nil
}
func (h notFoundCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h notFoundCounter) WithGroup(string) slog.Handler      { return h }

func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(notFoundCounter{}))
	os.Exit(m.Run())
}

// TestNoNotFoundLog: every msgID a client sends reaches the handler and
// none reaches zinx's router, so zinx never logs "msgID = N is not FOUND!".
func TestNoNotFoundLog(t *testing.T) {
	notFound.Store(0)
	var frames atomic.Int64
	s, err := Listen(Config{Name: "notfound", Addr: "127.0.0.1:0", Logger: quiet()}, countFrames{&frames})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	nc, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var out []byte
	for id := uint32(1); id <= 200; id++ {
		out = frame.Append(out, id*7919, []byte("x")) // msgIDs no router knows
	}
	if _, err := nc.Write(out); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); frames.Load() < 200 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if n := frames.Load(); n != 200 {
		t.Fatalf("handler saw %d of 200 frames", n)
	}
	if n := notFound.Load(); n != 0 {
		t.Fatalf("zinx logged %d \"not FOUND\" lines", n)
	}
	// The counter does see zinx's logger: the same line logged directly counts.
	zlog.Ins().ErrorF("api msgID = %d is not FOUND!", 7)
	if n := notFound.Load(); n != 1 {
		t.Fatalf("the not-FOUND counter is blind (saw %d)", n)
	}
}

type countFrames struct{ n *atomic.Int64 }

func (countFrames) OnOpen(*Conn)                    {}
func (countFrames) OnClose(*Conn)                   {}
func (c countFrames) OnFrame(*Conn, uint32, []byte) { c.n.Add(1) }
