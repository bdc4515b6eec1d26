package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/inbox"
	"github.com/zcluster/zcluster/internal/tools/zclient"
)

// stepTimeout bounds each step of the tour.
const stepTimeout = 5 * time.Second

// tourGate is a gate the tour connects to.
type tourGate struct {
	ID   string // node id, which login replies name
	Addr string // client address
}

// stepResult is the outcome of one tour step.
type stepResult struct {
	Name string
	Err  error // nil when the step passed
}

// String renders the result as the demo prints it.
func (r stepResult) String() string {
	if r.Err != nil {
		return "FAIL " + r.Name + ": " + oneLine(r.Err.Error())
	}
	return "PASS " + r.Name
}

// passed counts the passed steps.
func passed(rs []stepResult) int {
	n := 0
	for _, r := range rs {
		if r.Err == nil {
			n++
		}
	}
	return n
}

// errorFrame is the body of an error frame (msgID 65535).
type errorFrame struct {
	MsgID uint32 `json:"msg_id"`
	Error string `json:"error"`
}

// kickNotice is the body of msgID 9.
type kickNotice struct {
	Reason string `json:"reason"`
}

// tour holds the client connections the steps share.
type tour struct {
	g1, g2 tourGate
	alice  *zclient.Conn // on g1
	bob    *zclient.Conn // on g2
	anon   *zclient.Conn // on g1, never logged in
	alice2 *zclient.Conn // on g2, the second login of alice
	bob2   *zclient.Conn // on g1, bob back after the reliable step's offline
}

// runTour walks through the demo application with real client connections
// to two gates of a running cluster, writing one PASS or FAIL line per step
// to out as it goes, and returns the results. Each step has stepTimeout; a
// step that needs what an earlier one failed to set up fails too. Every
// connection is closed on return.
func runTour(ctx context.Context, g1, g2 tourGate, out io.Writer) []stepResult {
	t := &tour{g1: g1, g2: g2}
	defer t.close()
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{fmt.Sprintf("login: alice on %s, bob on %s", g1.ID, g2.ID), t.login},
		{`echo: alice sends 4 "ping" and gets 4 "ping" (gate -> im)`, t.echo},
		{fmt.Sprintf("cross-gate send: alice (%s) -> bob (%s) gets 100, alice gets 2 ok", g1.ID, g2.ID), t.send},
		{"offline: alice -> carol gets 2 \"carol is offline\"", t.offline},
		{`chain-echo: bob sends 3 "chain" and gets 3 "chain" (im -> echo)`, t.chainEcho},
		{"broadcast: alice's 5 \"hello all\" reaches alice and bob as 101", t.broadcast},
		{"errors: anonymous 2 and unknown msgID 777 get error frames, the connection stays open", t.errorFrames},
		{fmt.Sprintf("reliable: bob goes offline, alice sends two 6 (answered queued), bob logs in on %s, resumes, gets both in order", g1.ID), t.reliable},
		{fmt.Sprintf("kick: alice logs in again on %s; the %s connection gets 9 and is closed", g2.ID, g1.ID), t.kick},
	}
	results := make([]stepResult, 0, len(steps))
	for _, s := range steps {
		t.drain()
		sctx, cancel := context.WithTimeout(ctx, stepTimeout)
		err := s.fn(sctx)
		cancel()
		r := stepResult{Name: s.name, Err: err}
		fmt.Fprintln(out, r)
		results = append(results, r)
	}
	return results
}

func (t *tour) login(ctx context.Context) error {
	var err error
	if t.alice, err = dialGate(ctx, t.g1); err != nil {
		return err
	}
	if t.bob, err = dialGate(ctx, t.g2); err != nil {
		return err
	}
	ra, err := loginAs(ctx, t.alice, "alice", t.g1.ID)
	if err != nil {
		return err
	}
	rb, err := loginAs(ctx, t.bob, "bob", t.g2.ID)
	if err != nil {
		return err
	}
	if ra.Session == "" || ra.Session == rb.Session {
		return fmt.Errorf("sessions %q and %q: want two distinct ids", ra.Session, rb.Session)
	}
	return nil
}

func (t *tour) echo(ctx context.Context) error {
	if t.alice == nil {
		return errNoAlice
	}
	return roundTrip(ctx, t.alice, chat.MsgEcho, "ping")
}

func (t *tour) send(ctx context.Context) error {
	if t.alice == nil || t.bob == nil {
		return errNoAliceBob
	}
	if err := sendJSON(t.alice, chat.MsgSend, chat.SendRequest{To: "bob", Text: "hi bob"}); err != nil {
		return err
	}
	var m chat.Message
	if err := expectJSON(ctx, t.bob, chat.MsgDelivered, &m); err != nil {
		return fmt.Errorf("bob: %w", err)
	}
	if m != (chat.Message{From: "alice", Text: "hi bob"}) {
		return fmt.Errorf("bob got %+v, want from alice \"hi bob\"", m)
	}
	var r chat.SendReply
	if err := expectJSON(ctx, t.alice, chat.MsgSend, &r); err != nil {
		return fmt.Errorf("alice: %w", err)
	}
	if !r.OK {
		return fmt.Errorf("alice got %+v, want ok", r)
	}
	return nil
}

func (t *tour) offline(ctx context.Context) error {
	if t.alice == nil {
		return errNoAlice
	}
	if err := sendJSON(t.alice, chat.MsgSend, chat.SendRequest{To: "carol", Text: "are you there?"}); err != nil {
		return err
	}
	var r chat.SendReply
	if err := expectJSON(ctx, t.alice, chat.MsgSend, &r); err != nil {
		return err
	}
	if r.OK || r.Error != "carol is offline" {
		return fmt.Errorf("got %+v, want ok=false \"carol is offline\"", r)
	}
	return nil
}

func (t *tour) chainEcho(ctx context.Context) error {
	if t.bob == nil {
		return errors.New("bob is not logged in")
	}
	return roundTrip(ctx, t.bob, chat.MsgChainEcho, "chain")
}

func (t *tour) broadcast(ctx context.Context) error {
	if t.alice == nil || t.bob == nil {
		return errNoAliceBob
	}
	if err := t.alice.Send(chat.MsgBroadcast, []byte("hello all")); err != nil {
		return err
	}
	for _, rc := range []struct {
		name string
		conn *zclient.Conn
	}{{"alice", t.alice}, {"bob", t.bob}} {
		var m chat.Message
		if err := expectJSON(ctx, rc.conn, chat.MsgBroadcasted, &m); err != nil {
			return fmt.Errorf("%s: %w", rc.name, err)
		}
		if m != (chat.Message{From: "alice", Text: "hello all"}) {
			return fmt.Errorf("%s got %+v, want from alice \"hello all\"", rc.name, m)
		}
	}
	return nil
}

func (t *tour) errorFrames(ctx context.Context) error {
	var err error
	if t.anon, err = dialGate(ctx, t.g1); err != nil {
		return err
	}
	if err := sendJSON(t.anon, chat.MsgSend, chat.SendRequest{To: "bob", Text: "psst"}); err != nil {
		return err
	}
	var e errorFrame
	if err := expectJSON(ctx, t.anon, chat.MsgError, &e); err != nil {
		return fmt.Errorf("send before login: %w", err)
	}
	if e.MsgID != chat.MsgSend || e.Error != "not logged in" {
		return fmt.Errorf("send before login: got %+v, want msg_id 2 \"not logged in\"", e)
	}
	if err := t.anon.Send(777, []byte("?")); err != nil {
		return err
	}
	e = errorFrame{}
	if err := expectJSON(ctx, t.anon, chat.MsgError, &e); err != nil {
		return fmt.Errorf("msgID 777: %w", err)
	}
	if e.MsgID != 777 || !strings.Contains(e.Error, "777") {
		return fmt.Errorf("msgID 777: got %+v, want an error naming 777", e)
	}
	if err := roundTrip(ctx, t.anon, chat.MsgEcho, "still here"); err != nil {
		return fmt.Errorf("after the errors: %w", err)
	}
	return nil
}

// reliable: bob learns his inbox position (resume from now), goes offline;
// alice's two reliable messages are stored; bob logs in on the other gate,
// resumes from his position and gets both, in order, once.
func (t *tour) reliable(ctx context.Context) error {
	if t.alice == nil || t.bob == nil {
		return errNoAliceBob
	}
	var cur inbox.Cursor
	if err := t.bob.Send(inbox.MsgResume, inbox.ResumeRequest{Offset: inbox.FromNow}.Append(nil)); err != nil {
		return err
	}
	if err := expectResume(ctx, t.bob, &cur); err != nil {
		return fmt.Errorf("bob's first resume: %w", err)
	}
	_ = t.bob.Close()
	t.bob = nil
	// bob's gate unbinds him as soon as it sees the close: wait until a
	// plain send says he is offline (no plain message is in flight then).
	for {
		if err := sendJSON(t.alice, chat.MsgSend, chat.SendRequest{To: "bob", Text: "still there?"}); err != nil {
			return err
		}
		var r chat.SendReply
		if err := expectJSON(ctx, t.alice, chat.MsgSend, &r); err != nil {
			return err
		}
		if !r.OK {
			break
		}
		select {
		case <-ctx.Done():
			return errors.New("bob's gate did not notice he left")
		case <-time.After(20 * time.Millisecond):
		}
	}
	for _, text := range []string{"first while away", "second while away"} {
		if err := sendJSON(t.alice, chat.MsgReliable, chat.SendRequest{To: "bob", Text: text}); err != nil {
			return err
		}
		var r chat.ReliableReply
		if err := expectJSON(ctx, t.alice, chat.MsgReliable, &r); err != nil {
			return fmt.Errorf("alice: %w", err)
		}
		if !r.OK || !r.Queued {
			return fmt.Errorf("alice got %+v, want ok and queued", r)
		}
	}
	var err error
	if t.bob2, err = dialGate(ctx, t.g1); err != nil {
		return err
	}
	if _, err := loginAs(ctx, t.bob2, "bob", t.g1.ID); err != nil {
		return err
	}
	if err := t.bob2.Send(inbox.MsgResume, cur.Request().Append(nil)); err != nil {
		return err
	}
	if err := expectResume(ctx, t.bob2, &cur); err != nil {
		return fmt.Errorf("bob's resume: %w", err)
	}
	for _, want := range []string{"first while away", "second while away"} {
		f, err := expect(ctx, t.bob2, inbox.MsgMessage)
		if err != nil {
			return fmt.Errorf("bob: %w", err)
		}
		m, err := inbox.ParseMessage(f.Payload)
		if err != nil {
			return err
		}
		if isNew, err := cur.Message(m); err != nil || !isNew {
			return fmt.Errorf("bob: message %d out of order or repeated (%v)", m.Offset, err)
		}
		var msg chat.Message
		if err := json.Unmarshal(m.Payload, &msg); err != nil || m.MsgID != chat.MsgReliableMsg || msg != (chat.Message{From: "alice", Text: want}) {
			return fmt.Errorf("bob got msgID %d %s, want 102 from alice %q", m.MsgID, m.Payload, want)
		}
	}
	return nil
}

// expectResume waits for a resume answer and applies it to cur; a gap is
// an error here.
func expectResume(ctx context.Context, conn *zclient.Conn, cur *inbox.Cursor) error {
	f, err := expect(ctx, conn, inbox.MsgResume)
	if err != nil {
		return err
	}
	a, err := inbox.ParseResumeAnswer(f.Payload)
	if err != nil {
		return err
	}
	if a.Status != inbox.StatusOK {
		return fmt.Errorf("answer %+v, want ok", a)
	}
	cur.Answer(a)
	return nil
}

func (t *tour) kick(ctx context.Context) error {
	if t.alice == nil {
		return errNoAlice
	}
	var err error
	if t.alice2, err = dialGate(ctx, t.g2); err != nil {
		return err
	}
	if _, err := loginAs(ctx, t.alice2, "alice", t.g2.ID); err != nil {
		return fmt.Errorf("second login: %w", err)
	}
	var k kickNotice
	if err := expectJSON(ctx, t.alice, chat.MsgKick, &k); err != nil {
		return fmt.Errorf("first connection: %w", err)
	}
	if k.Reason == "" {
		return errors.New("first connection: kick notice without a reason")
	}
	select {
	case <-t.alice.Done():
		return nil
	case <-ctx.Done():
		return errors.New("first connection was told but not closed")
	}
}

var (
	errNoAlice    = errors.New("alice is not logged in")
	errNoAliceBob = errors.New("alice and bob are not both logged in")
)

// drain drops frames already received, so a late answer to an earlier step
// is not taken for this step's.
func (t *tour) drain() {
	for _, c := range []*zclient.Conn{t.alice, t.bob, t.anon, t.alice2, t.bob2} {
		if c == nil {
			continue
		}
	loop:
		for {
			select {
			case _, ok := <-c.Frames():
				if !ok {
					break loop
				}
			default:
				break loop
			}
		}
	}
}

func (t *tour) close() {
	for _, c := range []*zclient.Conn{t.alice, t.bob, t.anon, t.alice2, t.bob2} {
		if c != nil {
			_ = c.Close()
		}
	}
}

func dialGate(ctx context.Context, g tourGate) (*zclient.Conn, error) {
	c, err := zclient.Dial(ctx, g.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s at %s: %w", g.ID, g.Addr, err)
	}
	return c, nil
}

// loginAs logs conn in as user and checks the reply names gateID.
func loginAs(ctx context.Context, conn *zclient.Conn, user, gateID string) (chat.LoginReply, error) {
	if err := conn.Send(chat.MsgLogin, []byte(user)); err != nil {
		return chat.LoginReply{}, err
	}
	var r chat.LoginReply
	if err := expectJSON(ctx, conn, chat.MsgLogin, &r); err != nil {
		return r, fmt.Errorf("login %s: %w", user, err)
	}
	if !r.OK || r.User != user || r.Gate != gateID {
		return r, fmt.Errorf("login %s: got %+v, want ok on %s", user, r, gateID)
	}
	return r, nil
}

// roundTrip sends text with msgID and expects the same msgID and text back.
func roundTrip(ctx context.Context, conn *zclient.Conn, msgID uint32, text string) error {
	if err := conn.Send(msgID, []byte(text)); err != nil {
		return err
	}
	f, err := expect(ctx, conn, msgID)
	if err != nil {
		return err
	}
	if !bytes.Equal(f.Payload, []byte(text)) {
		return fmt.Errorf("got %d %q, want %q", msgID, f.Payload, text)
	}
	return nil
}

func sendJSON(conn *zclient.Conn, msgID uint32, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return conn.Send(msgID, b)
}

// expect waits for a frame with msgID; an error lists the frames skipped.
func expect(ctx context.Context, conn *zclient.Conn, msgID uint32) (zclient.Frame, error) {
	f, skipped, err := conn.Expect(ctx, msgID)
	if err != nil && len(skipped) > 0 {
		parts := make([]string, len(skipped))
		for i, s := range skipped {
			parts[i] = fmt.Sprintf("%d %s", s.MsgID, s.Payload)
		}
		err = fmt.Errorf("%w (got instead: %s)", err, strings.Join(parts, "; "))
	}
	return f, err
}

// expectJSON waits for a frame with msgID and decodes its JSON body into v.
func expectJSON(ctx context.Context, conn *zclient.Conn, msgID uint32, v any) error {
	f, err := expect(ctx, conn, msgID)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(f.Payload, v); err != nil {
		return fmt.Errorf("msgID %d body %q: %w", msgID, f.Payload, err)
	}
	return nil
}
