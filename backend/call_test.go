package backend_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/registry"
	"github.com/zcluster/zcluster/zctest"
)

const msgCallNobody uint32 = 40

type callResp struct {
	Err       string `json:"err"`
	Cancelled bool   `json:"cancelled"`
	Millis    int64  `json:"millis"`
}

// TestCallHonoursCtxWhileWaitingForANode: Call to a group with no live node
// waits a little for one to register, but no longer than the caller's ctx.
func TestCallHonoursCtxWhileWaitingForANode(t *testing.T) {
	c := zctest.Start(t, zctest.Config{Backend: func(b *backend.Backend) error {
		b.Handle(msgCallNobody, "call-nobody", backend.Typed(func(c *backend.Context, _ *struct{}) (*callResp, error) {
			ctx, cancel := context.WithCancel(c.Context())
			cancel()
			start := time.Now()
			_, err := c.Call(ctx, "nobody", 1, nil)
			return &callResp{Err: err.Error(), Cancelled: errors.Is(err, context.Canceled), Millis: time.Since(start).Milliseconds()}, nil
		}))
		return nil
	}, Groups: []string{"caller"}})
	cl := c.Client(t, 0).Login("ann")
	cl.SendJSON(msgCallNobody, struct{}{})
	var r callResp
	cl.ExpectJSON(msgCallNobody, &r)
	// Waiting for a node lasts up to a second; a cancelled ctx must end it
	// at once (500 ms is generous on a loaded machine).
	if !r.Cancelled || r.Millis > 500 {
		t.Fatalf("Call with a cancelled ctx returned %q after %d ms; want the ctx's error at once", r.Err, r.Millis)
	}
}

const msgCallMute uint32 = 45

// TestCallHonoursCtxWhileDialing: a Call to a node whose relay port
// accepts but never answers the handshake ends when the caller's ctx ends,
// not after the relay's 3 s handshake timeout.
func TestCallHonoursCtxWhileDialing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0") // the kernel accepts; nobody answers
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c := zctest.Start(t, zctest.Config{Backend: func(b *backend.Backend) error {
		b.Handle(msgCallMute, "call-mute", backend.Typed(func(c *backend.Context, _ *struct{}) (*callResp, error) {
			ctx, cancel := context.WithTimeout(c.Context(), 200*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := c.Call(ctx, "mute", 1, nil)
			return &callResp{Err: fmt.Sprint(err), Cancelled: errors.Is(err, context.DeadlineExceeded), Millis: time.Since(start).Milliseconds()}, nil
		}))
		return nil
	}, Groups: []string{"caller"}})
	etcdClient, _, err := c.Clients()
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.Register(t.Context(), registry.Config{Client: etcdClient}, registry.Node{ID: "mute-1", Group: "mute", Kind: "backend", RelayAddr: ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close(context.Background())
	caller := c.Backends()[0]
	deadline := time.Now().Add(10 * time.Second)
	for len(caller.Topology().Nodes("mute")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the caller never saw mute-1")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cl := c.Client(t, 0).Login("ann")
	cl.SendJSON(msgCallMute, struct{}{})
	var r callResp
	cl.ExpectJSON(msgCallMute, &r)
	// 200 ms ctx; the handshake timeout is 3 s: 1.5 s is generous on a
	// loaded machine and still tells the two apart.
	if !r.Cancelled || r.Millis > 1500 {
		t.Fatalf("Call with a 200ms ctx to a node that never answers the handshake returned %q after %d ms; want the ctx's deadline", r.Err, r.Millis)
	}
}
