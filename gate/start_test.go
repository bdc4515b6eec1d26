package gate

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/zcluster/zcluster/internal/tools/zclient"
)

// TestStartInterruptedTellsClients: a gate whose start is interrupted
// (SIGTERM while it registers in etcd) after clients connected and logged
// in tells each of them why (msgID 9 with a reason) before closing it, and
// removes their Redis records, as a stop of a running gate does. The bug:
// the failed Start closed the listener, so its clients saw their
// connection close with no notice and their records stayed for a TTL.
func TestStartInterruptedTellsClients(t *testing.T) {
	g := newTestGate(t, nil)
	var (
		conns []*zclient.Conn
		keys  []string
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g.testHookRegister = func(context.Context) {
		for _, user := range []string{"alice", "bob", "carol"} {
			conn, sid := g.login(t, user)
			conns = append(conns, conn)
			keys = append(keys, "zc:s:"+sid, "zc:u:"+user)
		}
		if got := g.keysExist(t, keys...); len(got) != len(keys) {
			t.Errorf("records before the interruption: %v, want %v", got, keys)
		}
		cancel() // the signal arrives while the gate registers
	}
	if err := g.Start(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Start interrupted while registering = %v, want context.Canceled", err)
	}
	if len(conns) != 3 {
		t.Fatalf("%d clients logged in before the interruption, want 3", len(conns))
	}
	for i, conn := range conns {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		f, skipped, err := conn.Expect(ctx, MsgKick)
		cancel()
		if err != nil {
			t.Fatalf("client %d: %v before any msgID %d (skipped %v)", i, err, MsgKick, skipped)
		}
		var k struct {
			Reason string `json:"reason"`
		}
		if err := json.Unmarshal(f.Payload, &k); err != nil || k.Reason == "" {
			t.Fatalf("client %d: kick %s without a reason (%v)", i, f.Payload, err)
		}
		select {
		case <-conn.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("client %d still open 5s after the kick", i)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for left := g.keysExist(t, keys...); len(left) > 0; left = g.keysExist(t, keys...) {
		if time.Now().After(deadline) {
			t.Fatalf("records left 5s after the interrupted start: %v", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-g.Done():
	default:
		t.Fatal("Start failed but the gate is not stopped (Done still open)")
	}
}
