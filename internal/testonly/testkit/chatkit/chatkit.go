// Package chatkit holds the client helpers the end-to-end and scale suites
// share for the demo chat app: dial a gate, wait for a frame, log in. It is
// imported only from _test files.
package chatkit

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/internal/tools/zclient"
)

// Dial connects a client to a gate's client address; Cleanup closes it.
func Dial(t testing.TB, addr string) *zclient.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := zclient.Dial(ctx, addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// Expect waits up to 5s for the next frame with msgID, skipping others.
func Expect(t testing.TB, conn *zclient.Conn, msgID uint32) zclient.Frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f, skipped, err := conn.Expect(ctx, msgID)
	if err != nil {
		t.Fatalf("%v (skipped %s)", err, Describe(skipped))
	}
	return f
}

// Describe renders frames as "[msgID:payload ...]" for failure messages.
func Describe(fs []zclient.Frame) string {
	parts := make([]string, 0, len(fs))
	for _, f := range fs {
		parts = append(parts, fmt.Sprintf("%d:%q", f.MsgID, f.Payload))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// Login logs conn in as user with the demo app's msgID 1 and fails the test
// unless the gate answers ok.
func Login(t testing.TB, conn *zclient.Conn, user string) chat.LoginReply {
	t.Helper()
	if err := conn.Send(chat.MsgLogin, []byte(user)); err != nil {
		t.Fatal(err)
	}
	var r chat.LoginReply
	f := Expect(t, conn, chat.MsgLogin)
	if err := json.Unmarshal(f.Payload, &r); err != nil || !r.OK {
		t.Fatalf("login %s: %s (%v)", user, f.Payload, err)
	}
	return r
}

// MustJSON marshals v or fails the test.
func MustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
