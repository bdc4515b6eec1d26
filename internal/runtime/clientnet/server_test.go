package clientnet

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/zcluster/zcluster/internal/runtime/frame"
	"github.com/zcluster/zcluster/internal/tools/zclient"
)

// echoHandler answers every frame with the same frame; msgID 99 closes
// the connection after answering.
type echoHandler struct{ opened, closed atomic.Int64 }

func (h *echoHandler) OnOpen(*Conn) { h.opened.Add(1) }
func (h *echoHandler) OnClose(c *Conn) {
	if c.Context().Err() == nil {
		panic("OnClose before the context ended")
	}
	h.closed.Add(1)
}
func (h *echoHandler) OnFrame(c *Conn, msgID uint32, p []byte) {
	_ = c.Send(msgID, p)
	if msgID == 99 {
		_ = c.Flush(time.Second)
		c.Close()
	}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// Several clients at once, packed frames, a server-side close with a
// normal close frame, and a Stop that closes the rest with 1001: every
// OnOpen gets its OnClose, after the connection's context ended.
func TestWSServerEchoCloseStop(t *testing.T) {
	h := &echoHandler{}
	s, err := ListenWS(WSConfig{Name: "t", Addr: "127.0.0.1:0", Logger: quiet()}, h)
	if err != nil {
		t.Fatal(err)
	}
	url := s.URL("")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const n = 8
	conns := make([]*zclient.Conn, n)
	for i := range conns {
		if conns[i], err = zclient.DialWS(ctx, url, zclient.WSOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, n)
	for i, c := range conns {
		go func() {
			packed := frame.Append(frame.Append(nil, 1, []byte("a")), 2, []byte("bb"))
			for range 50 {
				if err := c.SendRaw(packed); err != nil {
					done <- err
					return
				}
				for _, want := range []uint32{1, 2} {
					f, err := c.Recv(ctx)
					if err != nil || f.MsgID != want {
						done <- errors.Join(err, errors.New("wrong answer"))
						return
					}
				}
			}
			if i%2 == 0 {
				_ = c.Send(99, nil)
			}
			done <- nil
		}()
	}
	for range n {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i += 2 {
		<-conns[i].Done()
		var ce *websocket.CloseError
		if !errors.As(conns[i].Err(), &ce) || ce.Code != websocket.CloseNormalClosure {
			t.Fatalf("server-side close: %v", conns[i].Err())
		}
	}
	waitFor(t, "the closed half to be gone", func() bool { return s.Len() == n/2 })
	s.Stop()
	s.Stop() // twice is fine
	for i := 1; i < n; i += 2 {
		<-conns[i].Done()
		var ce *websocket.CloseError
		if !errors.As(conns[i].Err(), &ce) || ce.Code != websocket.CloseGoingAway {
			t.Fatalf("close at Stop: %v", conns[i].Err())
		}
	}
	waitFor(t, "every OnClose", func() bool { return h.closed.Load() == n })
	if h.opened.Load() != n {
		t.Fatalf("%d opened, want %d", h.opened.Load(), n)
	}
}

func TestKCPServerEchoStop(t *testing.T) {
	h := &echoHandler{}
	s, err := ListenKCP(KCPConfig{Name: "t", Addr: "127.0.0.1:0", Logger: quiet()}, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := zclient.DialKCP(ctx, s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 20 {
		p := make([]byte, 3000*i) // up to 57 KB: many UDP packets
		if err := c.Send(7, p); err != nil {
			t.Fatal(err)
		}
		f, err := c.Recv(ctx)
		if err != nil || f.MsgID != 7 || len(f.Payload) != len(p) {
			t.Fatalf("echo %d: %v %d bytes", i, err, len(f.Payload))
		}
	}
	s.Stop()
	s.Stop()
	waitFor(t, "OnClose", func() bool { return h.closed.Load() == 1 })
}

func TestListenErrors(t *testing.T) {
	s, err := ListenWS(WSConfig{Addr: "127.0.0.1:0", Logger: quiet()}, &echoHandler{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if _, err := ListenWS(WSConfig{Addr: s.Addr(), Logger: quiet()}, &echoHandler{}); !errors.Is(err, ErrListen) {
		t.Fatalf("second listener on %s: %v, want ErrListen", s.Addr(), err)
	}
	if _, err := ListenWS(WSConfig{Addr: "127.0.0.1:0", Path: "ws"}, &echoHandler{}); !errors.Is(err, ErrConfig) {
		t.Fatalf("path without /: %v", err)
	}
	if _, err := ListenWS(WSConfig{Addr: "127.0.0.1:0", CertFile: "/nonexistent.pem", KeyFile: "/nonexistent.key"}, &echoHandler{}); !errors.Is(err, ErrConfig) {
		t.Fatalf("missing certificate: %v", err)
	}
	if _, err := ListenKCP(KCPConfig{Addr: "nonsense"}, &echoHandler{}); !errors.Is(err, ErrListen) {
		t.Fatalf("bad kcp address: %v", err)
	}
}
