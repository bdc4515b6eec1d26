package backend_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/zcluster/zcluster/backend"
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
