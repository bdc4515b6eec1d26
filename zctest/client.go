package zctest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/inbox"
	"github.com/zcluster/zcluster/internal/tools/zclient"
	"github.com/zcluster/zcluster/protocol"
)

// LoginMsgID is the msgID of the test login that gates run when
// Config.Gate is nil: the payload is the user name, the answer (same
// msgID) is JSON LoginReply.
const LoginMsgID uint32 = 1

// ExpectTimeout bounds each Expect.
const ExpectTimeout = 5 * time.Second

// LoginReply answers the test login.
type LoginReply struct {
	OK      bool   `json:"ok"`
	User    string `json:"user,omitempty"`
	Session string `json:"session,omitempty"`
	Gate    string `json:"gate,omitempty"`
	Error   string `json:"error,omitempty"`
}

// testLogin registers the test login on g.
func testLogin(g *gate.Gate) error {
	g.Handle(LoginMsgID, "login", func(c *gate.Context) error {
		name := string(c.Payload())
		if name == "" {
			return errors.New("empty user name")
		}
		if err := c.Login(name); err != nil {
			return err
		}
		b, _ := json.Marshal(LoginReply{OK: true, User: name, Session: c.Session(), Gate: c.GateID()})
		return c.Reply(LoginMsgID, b)
	}, gate.Anonymous())
	return nil
}

// Start is New for a test: it fails t on error and closes the cluster when
// t ends. With Config.Gates zero it starts two gates.
func Start(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	if cfg.Gates == 0 {
		cfg.Gates = 2
	}
	if os.Getenv("ZC_TEST_REDIS") == "require" {
		cfg.RequireRedisServer = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout+ReadyTimeout)
	defer cancel()
	c, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("zctest: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("zctest: %v", err)
		}
	})
	return c
}

// Frame is one frame a client received.
type Frame struct {
	MsgID   uint32
	Payload []byte
}

// ErrorFrame is the body of an error frame (msgID protocol.MsgError).
type ErrorFrame struct {
	MsgID uint32 `json:"msg_id"`
	Error string `json:"error"`
}

// Client is a test client connected to a gate. Its methods fail the test
// on error; frames received while waiting for another msgID are kept for
// later Expects, in order.
type Client struct {
	t       testing.TB
	conn    *zclient.Conn
	pending []Frame
	// Session is the session id after Login.
	Session string
	// Cursor is the client's position in its reliable inbox (Resume,
	// ExpectReliable); set it to resume from a position a previous client
	// of the same user reached.
	Cursor inbox.Cursor
}

// Client connects a test client to the i-th gate (start order). The
// connection is closed when t ends.
func (c *Cluster) Client(t testing.TB, i int) *Client {
	t.Helper()
	gs := c.Gates()
	if i < 0 || i >= len(gs) {
		t.Fatalf("zctest: gate %d of %d", i, len(gs))
	}
	return Dial(t, gs[i].ListenAddr())
}

// Dial connects a test client to the gate at addr.
func Dial(t testing.TB, addr string) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ExpectTimeout)
	defer cancel()
	conn, err := zclient.Dial(ctx, addr)
	if err != nil {
		t.Fatalf("zctest: dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &Client{t: t, conn: conn}
}

// Login logs in as user with the test login (LoginMsgID) and returns the
// client.
func (cl *Client) Login(user string) *Client {
	cl.t.Helper()
	cl.Send(LoginMsgID, []byte(user))
	var r LoginReply
	cl.ExpectJSON(LoginMsgID, &r)
	if !r.OK {
		cl.t.Fatalf("zctest: login %q refused: %s", user, r.Error)
	}
	cl.Session = r.Session
	return cl
}

// Send sends a frame.
func (cl *Client) Send(msgID uint32, payload []byte) {
	cl.t.Helper()
	if err := cl.conn.Send(msgID, payload); err != nil {
		cl.t.Fatalf("zctest: send msgID %d: %v", msgID, err)
	}
}

// SendJSON sends v encoded as JSON.
func (cl *Client) SendJSON(msgID uint32, v any) {
	cl.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		cl.t.Fatalf("zctest: encode %T: %v", v, err)
	}
	cl.Send(msgID, b)
}

// Recv returns the next frame of any msgID, waiting up to ExpectTimeout.
func (cl *Client) Recv() Frame {
	cl.t.Helper()
	f, err := cl.Next(ExpectTimeout)
	if err != nil {
		cl.t.Fatalf("zctest: %v", err)
	}
	return f
}

// Next returns the next frame of any msgID, or an error after timeout or
// when the connection ends.
func (cl *Client) Next(timeout time.Duration) (Frame, error) {
	if len(cl.pending) > 0 {
		f := cl.pending[0]
		cl.pending = cl.pending[1:]
		return f, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	f, err := cl.conn.Recv(ctx)
	if err != nil {
		return Frame{}, fmt.Errorf("no frame within %v: %w", timeout, err)
	}
	return Frame{MsgID: f.MsgID, Payload: f.Payload}, nil
}

// Expect waits for a frame with msgID and returns its payload. Other
// frames are kept for later. An error frame for msgID fails the test with
// its text.
func (cl *Client) Expect(msgID uint32) []byte {
	cl.t.Helper()
	f, err := cl.expect(msgID)
	if err != nil {
		cl.t.Fatalf("zctest: %v", err)
	}
	return f.Payload
}

func (cl *Client) expect(msgID uint32) (Frame, error) {
	deadline := time.Now().Add(ExpectTimeout)
	for i, f := range cl.pending {
		if f.MsgID == msgID {
			cl.pending = append(cl.pending[:i], cl.pending[i+1:]...)
			return f, nil
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	for {
		f, err := cl.conn.Recv(ctx)
		if err != nil {
			return Frame{}, fmt.Errorf("no frame with msgID %d within %v (kept %d others): %w", msgID, ExpectTimeout, len(cl.pending), err)
		}
		if f.MsgID == msgID {
			return Frame{MsgID: f.MsgID, Payload: f.Payload}, nil
		}
		if f.MsgID == protocol.MsgError && msgID != protocol.MsgError {
			var e ErrorFrame
			if json.Unmarshal(f.Payload, &e) == nil && e.MsgID == msgID {
				return Frame{}, fmt.Errorf("error frame for msgID %d: %s", msgID, e.Error)
			}
		}
		cl.pending = append(cl.pending, Frame{MsgID: f.MsgID, Payload: f.Payload})
	}
}

// ExpectJSON waits for a frame with msgID and decodes its JSON payload
// into v.
func (cl *Client) ExpectJSON(msgID uint32, v any) {
	cl.t.Helper()
	p := cl.Expect(msgID)
	if err := json.Unmarshal(p, v); err != nil {
		cl.t.Fatalf("zctest: msgID %d payload %q: %v", msgID, p, err)
	}
}

// ExpectError waits for an error frame about msgID and returns its text.
func (cl *Client) ExpectError(msgID uint32) string {
	cl.t.Helper()
	for {
		var e ErrorFrame
		cl.ExpectJSON(protocol.MsgError, &e)
		if e.MsgID == msgID {
			return e.Error
		}
	}
}

// ExpectNone fails the test if a frame with msgID arrives within d.
func (cl *Client) ExpectNone(msgID uint32, d time.Duration) {
	cl.t.Helper()
	for _, f := range cl.pending {
		if f.MsgID == msgID {
			cl.t.Fatalf("zctest: unexpected frame msgID %d: %q", msgID, f.Payload)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		f, err := cl.conn.Recv(ctx)
		if err != nil {
			return
		}
		if f.MsgID == msgID {
			cl.t.Fatalf("zctest: unexpected frame msgID %d: %q", msgID, f.Payload)
		}
		cl.pending = append(cl.pending, Frame{MsgID: f.MsgID, Payload: f.Payload})
	}
}

// Close closes the connection (the gate sees the client leave).
func (cl *Client) Close() { _ = cl.conn.Close() }

// Closed returns a channel closed when the connection has ended.
func (cl *Client) Closed() <-chan struct{} { return cl.conn.Done() }
