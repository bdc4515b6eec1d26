package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	zccluster "github.com/zcluster/zcluster/cluster"
	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/inbox"
	"github.com/zcluster/zcluster/internal/testonly/testkit"
	"github.com/zcluster/zcluster/internal/testonly/testkit/chatkit"
	"github.com/zcluster/zcluster/internal/tools/zclient"
)

// The reliable channel end to end: Deliver (the chat demo's msgID 6), the
// inbox in a real redis-server, resume on any gate.

// rsend sends a reliable chat message and returns the sender's answer.
func rsend(t *testing.T, from *zclient.Conn, to, text string) chat.ReliableReply {
	t.Helper()
	_ = from.Send(chat.MsgReliable, chatkit.MustJSON(t, chat.SendRequest{To: to, Text: text}))
	var r chat.ReliableReply
	if err := json.Unmarshal(chatkit.Expect(t, from, chat.MsgReliable).Payload, &r); err != nil || !r.OK {
		t.Fatalf("reliable send to %s: %+v %v", to, r, err)
	}
	return r
}

// reader is a client of the reliable channel: it resumes, checks every
// frame against its cursor and records the messages.
type reader struct {
	t      *testing.T
	conn   *zclient.Conn
	cursor inbox.Cursor

	mu      sync.Mutex
	texts   []string // message texts in arrival order
	dups    int
	errs    []string // error frames and protocol violations
	answers []inbox.ResumeAnswer
}

// resume sends the cursor's resume request on conn (logged in) and reads
// every frame into r until the connection ends.
func (r *reader) resume(conn *zclient.Conn) {
	r.mu.Lock()
	r.conn = conn
	req := r.cursor.Request()
	r.mu.Unlock()
	if err := conn.Send(inbox.MsgResume, req.Append(nil)); err != nil {
		r.t.Errorf("resume send: %v", err)
	}
	go func() {
		for f := range conn.Frames() {
			r.frame(f)
		}
	}()
}

func (r *reader) frame(f zclient.Frame) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch f.MsgID {
	case inbox.MsgResume:
		a, err := inbox.ParseResumeAnswer(f.Payload)
		if err != nil {
			r.errs = append(r.errs, err.Error())
			return
		}
		r.answers = append(r.answers, a)
		r.cursor.Answer(a)
	case inbox.MsgMessage:
		m, err := inbox.ParseMessage(f.Payload)
		if err != nil {
			r.errs = append(r.errs, err.Error())
			return
		}
		isNew, err := r.cursor.Message(m)
		switch {
		case err != nil:
			r.errs = append(r.errs, err.Error())
		case !isNew:
			r.dups++
		case m.MsgID != chat.MsgReliableMsg:
			r.errs = append(r.errs, fmt.Sprintf("app msgID %d", m.MsgID))
		default:
			var msg chat.Message
			_ = json.Unmarshal(m.Payload, &msg)
			r.texts = append(r.texts, msg.From+":"+msg.Text)
		}
	case gate.MsgError:
		r.errs = append(r.errs, string(f.Payload))
	}
}

func (r *reader) snapshot() (texts []string, dups int, errs []string, answers []inbox.ResumeAnswer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.texts...), r.dups, append([]string(nil), r.errs...), append([]inbox.ResumeAnswer(nil), r.answers...)
}

// waitTexts waits until r has received n messages.
func (r *reader) waitTexts(n int) []string {
	r.t.Helper()
	testkit.CheckFor(r.t, 10*time.Second, 10*time.Millisecond, func() error {
		texts, _, errs, _ := r.snapshot()
		if len(errs) > 0 {
			return fmt.Errorf("errors: %v", errs)
		}
		if len(texts) < n {
			return fmt.Errorf("%d of %d messages", len(texts), n)
		}
		return nil
	})
	texts, dups, errs, _ := r.snapshot()
	if len(texts) != n || dups != 0 || len(errs) != 0 {
		r.t.Fatalf("want %d messages, no duplicate, no error; got %v, %d duplicates, errors %v", n, texts, dups, errs)
	}
	return texts
}

func wantTexts(t *testing.T, got []string, want ...string) {
	t.Helper()
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("messages %q, want %q", got, want)
	}
}

// TestReliableOfflineThenResume: messages to an offline user are stored
// ("queued"), and reach them, in order, when they log in on any gate and
// resume; live ones follow; a reconnect resumes where the client was.
func TestReliableOfflineThenResume(t *testing.T) {
	c := newCluster(t)
	g1, g2 := c.startGate("gate-1"), c.startGate("gate-2")
	c.startBackend("im-1", chat.GroupIM)
	c.waitGroupSize(chat.GroupIM, 1, 5*time.Second)
	alice := dial(t, g1)
	chatkit.Login(t, alice, "alice")
	for i, text := range []string{"one", "two", "three"} {
		r := rsend(t, alice, "bob", text)
		if !r.Queued || r.Offset != uint64(i+1) {
			t.Fatalf("send to offline bob: %+v", r)
		}
	}
	bob := &reader{t: t}
	conn := dial(t, g2)
	chatkit.Login(t, conn, "bob")
	bob.resume(conn)
	wantTexts(t, bob.waitTexts(3), "alice:one", "alice:two", "alice:three")
	if _, _, _, ans := bob.snapshot(); len(ans) != 1 || ans[0].Status != inbox.StatusOK || ans[0].Next != 1 || ans[0].Last != 3 {
		t.Fatalf("resume answers %+v", ans)
	}
	if r := rsend(t, alice, "bob", "live"); r.Queued || r.Offset != 4 {
		t.Fatalf("send to online bob: %+v", r)
	}
	bob.waitTexts(4)

	// bob leaves; two more arrive; he comes back on the other gate.
	_ = conn.Close()
	testkit.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if g2.Sessions() != 0 {
			return fmt.Errorf("gate-2 still holds bob")
		}
		return nil
	})
	rsend(t, alice, "bob", "five")
	rsend(t, alice, "bob", "six")
	conn = dial(t, g1)
	chatkit.Login(t, conn, "bob")
	bob.resume(conn)
	texts := bob.waitTexts(6)
	wantTexts(t, texts[4:], "alice:five", "alice:six")
	if _, _, _, ans := bob.snapshot(); ans[1] != (inbox.ResumeAnswer{Status: inbox.StatusOK, Epoch: ans[0].Epoch, Next: 5, Last: 6}) {
		t.Fatalf("second resume answer %+v", ans[1])
	}
}

// TestReliableTrimmedAndFlushed: past the inbox bound the oldest messages
// are trimmed and a resume from before them answers gap; after FLUSHALL the
// epoch changes and a resume answers gap, even for a connected client.
func TestReliableTrimmedAndFlushed(t *testing.T) {
	c, rs := newClusterRedis(t)
	c.inboxMax = 5
	g1, g2 := c.startGate("gate-1"), c.startGate("gate-2")
	c.startBackend("im-1", chat.GroupIM)
	c.waitGroupSize(chat.GroupIM, 1, 5*time.Second)
	alice := dial(t, g1)
	chatkit.Login(t, alice, "alice")

	bob := &reader{t: t}
	conn := dial(t, g2)
	chatkit.Login(t, conn, "bob")
	bob.resume(conn)
	rsend(t, alice, "bob", "m1")
	rsend(t, alice, "bob", "m2")
	bob.waitTexts(2)
	_ = conn.Close()
	testkit.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if g2.Resumed() != 0 {
			return fmt.Errorf("gate-2 still holds bob")
		}
		return nil
	})
	for i := 3; i <= 10; i++ {
		rsend(t, alice, "bob", fmt.Sprintf("m%d", i))
	}
	conn = dial(t, g2)
	chatkit.Login(t, conn, "bob")
	bob.resume(conn)
	texts := bob.waitTexts(7)
	wantTexts(t, texts[2:], "alice:m6", "alice:m7", "alice:m8", "alice:m9", "alice:m10")
	_, _, _, ans := bob.snapshot()
	epoch := ans[0].Epoch
	if ans[1] != (inbox.ResumeAnswer{Status: inbox.StatusGap, Epoch: epoch, Next: 6, Last: 10}) {
		t.Fatalf("resume after trimming: %+v, want gap from 6", ans[1])
	}

	// FLUSHALL while bob is connected: the next message comes with a gap
	// answer and a new epoch first.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	// Logins are written again on the next refresh (TTL/3); until then the
	// sender sees bob offline and the message is queued. Either way bob
	// gets it.
	rsend(t, alice, "bob", "after flush")
	bob.waitTexts(8)
	_, _, _, ans = bob.snapshot()
	last := ans[len(ans)-1]
	if last.Status != inbox.StatusGap || last.Epoch == epoch || last.Next != 1 {
		t.Fatalf("answer after FLUSHALL: %+v (old epoch %x)", last, epoch)
	}

	// A resume with the pre-flush position on a new connection: gap.
	_ = conn.Close()
	testkit.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if g2.Resumed() != 0 {
			return fmt.Errorf("gate-2 still holds bob")
		}
		return nil
	})
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	conn = dial(t, g1)
	chatkit.Login(t, conn, "bob")
	bob.resume(conn)
	testkit.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, _, _, a := bob.snapshot(); len(a) < 4 {
			return fmt.Errorf("%d answers", len(a))
		}
		return nil
	})
	_, _, errs, ans := bob.snapshot()
	if last := ans[len(ans)-1]; last.Status != inbox.StatusGap || last.Epoch == ans[2].Epoch || len(errs) != 0 {
		t.Fatalf("resume after a second FLUSHALL: %+v, errors %v", ans, errs)
	}
	if _, _, gaps := bob.cursorState(); gaps != 3 {
		t.Fatalf("cursor saw %d gaps, want 3", gaps)
	}
}

func (r *reader) cursorState() (epoch, offset uint64, gaps int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cursor.Epoch, r.cursor.Offset, r.cursor.Gaps
}

// TestReliableResumeRacesLive: a user resumes while three senders on two
// backends keep delivering to them: every message arrives exactly once, in
// offset order, and each sender's messages in the order sent.
func TestReliableResumeRacesLive(t *testing.T) {
	c := newCluster(t)
	g1, g2 := c.startGate("gate-1"), c.startGate("gate-2")
	c.startBackend("im-1", chat.GroupIM)
	c.startBackend("im-2", chat.GroupIM)
	c.waitGroupSize(chat.GroupIM, 2, 5*time.Second)
	const senders, each = 3, 150
	var wg sync.WaitGroup
	started := make(chan struct{}, senders)
	for s := 0; s < senders; s++ {
		conn := dial(t, g1)
		name := fmt.Sprintf("s%d", s)
		chatkit.Login(t, conn, name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if i == each/3 {
					started <- struct{}{}
				}
				rsend(t, conn, "bob", fmt.Sprint(i))
			}
		}()
	}
	for s := 0; s < senders; s++ {
		<-started
	}
	// About a third is stored; the rest arrives during and after the replay.
	bob := &reader{t: t}
	conn := dial(t, g2)
	chatkit.Login(t, conn, "bob")
	bob.resume(conn)
	wg.Wait()
	texts := bob.waitTexts(senders * each)
	next := map[string]int{}
	for _, tx := range texts {
		from, n, _ := strings.Cut(tx, ":")
		if fmt.Sprint(next[from]) != n {
			t.Fatalf("from %s: got %s, want %d", from, n, next[from])
		}
		next[from]++
	}
}

// TestReliableHostileResume: resume requests that are malformed, out of
// range, or carry another user's epoch get an error frame and never
// another user's messages; the connection stays usable.
func TestReliableHostileResume(t *testing.T) {
	c := newCluster(t)
	g1 := c.startGate("gate-1")
	c.startBackend("im-1", chat.GroupIM)
	c.waitGroupSize(chat.GroupIM, 1, 5*time.Second)
	alice := dial(t, g1)
	chatkit.Login(t, alice, "alice")
	rsend(t, alice, "carol", "for carol only")
	rsend(t, alice, "mallory", "for mallory")

	// carol's real epoch, as a curious client might learn it.
	carol := &reader{t: t}
	cc := dial(t, g1)
	chatkit.Login(t, cc, "carol")
	carol.resume(cc)
	carol.waitTexts(1)
	cEpoch, _, _ := carol.cursorState()

	m := dial(t, g1)
	expectErr := func(payload []byte, substr string) {
		t.Helper()
		_ = m.Send(inbox.MsgResume, payload)
		f := chatkit.Expect(t, m, gate.MsgError)
		e := decodeError(t, f)
		if e.MsgID != inbox.MsgResume || !strings.Contains(e.Error, substr) {
			t.Fatalf("error frame %+v, want one about %q", e, substr)
		}
	}
	expectErr(inbox.ResumeRequest{}.Append(nil), "not logged in")
	chatkit.Login(t, m, "mallory")
	expectErr([]byte("garbage"), "want 16")
	expectErr(make([]byte, 17), "want 16")
	expectErr(inbox.ResumeRequest{Epoch: 0, Offset: 5}.Append(nil), "epoch 0")
	expectErr(inbox.ResumeRequest{Epoch: cEpoch, Offset: 0}.Append(nil), "not an epoch of mallory")
	expectErr(inbox.ResumeRequest{Epoch: 0xdeadbeef00000000, Offset: 0}.Append(nil), "not an epoch of mallory")
	// mallory's own epoch, from a fresh resume, then an offset far ahead.
	mr := &reader{t: t}
	mr.resume(m) // takes over m's frames from here on
	mr.waitTexts(1)
	mEpoch, _, _ := mr.cursorState()
	_ = m.Send(inbox.MsgResume, inbox.ResumeRequest{Epoch: mEpoch, Offset: 1}.Append(nil))
	testkit.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, _, errs, _ := mr.snapshot(); len(errs) == 0 {
			return fmt.Errorf("no answer to the second resume yet")
		}
		return nil
	})
	m2 := dial(t, g1)
	chatkit.Login(t, m2, "mallory") // kicks m
	_ = m2.Send(inbox.MsgResume, inbox.ResumeRequest{Epoch: mEpoch, Offset: 1 << 40}.Append(nil))
	e := decodeError(t, chatkit.Expect(t, m2, gate.MsgError))
	if !strings.Contains(e.Error, "beyond the last offset 1") {
		t.Fatalf("far offset: %+v", e)
	}
	// After the refusals a proper resume works on the same connection.
	mr2 := &reader{t: t, cursor: inbox.Cursor{Epoch: mEpoch}}
	mr2.resume(m2)
	rsend(t, alice, "mallory", "second")
	texts := mr2.waitTexts(2)
	wantTexts(t, texts, "alice:for mallory", "alice:second")
	_, _, errs, _ := mr.snapshot()
	if len(errs) != 1 || !strings.Contains(errs[0], "already resumed") {
		t.Fatalf("second resume on one connection: errors %v", errs)
	}
	for _, r := range []*reader{mr, mr2} {
		texts, _, _, _ := r.snapshot()
		for _, tx := range texts {
			if strings.Contains(tx, "carol") {
				t.Fatalf("mallory received carol's message %q", tx)
			}
		}
	}
}

// TestReliableLostPushRecovered: a message stored without its push (as when
// the push went to a gate the user had just left) still reaches the
// resumed user: at once when the next message shows the hole in the
// offsets (on a gate whose sweep is 10s away, so only the hole can explain
// it), and by the gate's sweep (every SessionTTL/3) when no message follows.
func TestReliableLostPushRecovered(t *testing.T) {
	c, rs := newClusterRedis(t)
	g1 := c.startGate("gate-1")
	slow := startGateSessionTTL(c, "gate-slow", 30*time.Second)
	c.startBackend("im-1", chat.GroupIM)
	c.waitGroupSize(chat.GroupIM, 1, 5*time.Second)
	c.waitGroupSize("gate", 2, 5*time.Second)
	alice := dial(t, g1)
	chatkit.Login(t, alice, "alice")
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	store, err := inbox.New(inbox.Config{Client: rdb})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	silent := func(to, text string) {
		t.Helper()
		msg, _ := json.Marshal(chat.Message{From: "ghost", Text: text})
		if _, err := store.Append(ctx, to, chat.MsgReliableMsg, msg); err != nil {
			t.Fatal(err)
		}
	}

	// A hole: offset 2 stored without a push, 3 pushed.
	bob := &reader{t: t}
	conn := dial(t, slow)
	chatkit.Login(t, conn, "bob")
	bob.resume(conn)
	rsend(t, alice, "bob", "pushed 1")
	bob.waitTexts(1)
	silent("bob", "lost push 2")
	start := time.Now()
	rsend(t, alice, "bob", "pushed 3")
	texts := bob.waitTexts(3)
	holeFilled := time.Since(start)
	wantTexts(t, texts[1:], "ghost:lost push 2", "alice:pushed 3")
	if holeFilled > 5*time.Second {
		t.Fatalf("the hole took %v to fill (the sweep is 10s away)", holeFilled)
	}

	// No message follows: the sweep of carol's gate finds it.
	carol := &reader{t: t}
	cc := dial(t, g1)
	chatkit.Login(t, cc, "carol")
	carol.resume(cc)
	rsend(t, alice, "carol", "pushed 1")
	carol.waitTexts(1)
	silent("carol", "lost push 2")
	start = time.Now()
	texts = carol.waitTexts(2)
	wantTexts(t, texts[1:], "ghost:lost push 2")
	t.Logf("a lost push is delivered %v after the next message shows the hole, %v after it was stored when none follows (sweep every %v)",
		holeFilled.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), testSessionTTL/3)
}

// startGateSessionTTL starts a chat gate with its own session TTL (its
// inbox sweep runs every third of it).
func startGateSessionTTL(c *cluster, id string, ttl time.Duration) *gate.Gate {
	c.t.Helper()
	cli, rdb := c.clients()
	g, err := gate.New(gate.Config{
		Node: zccluster.Node{
			ID:          id,
			RelayListen: "127.0.0.1:0",
			Etcd:        cli,
			Redis:       rdb,
			Secret:      c.secret,
			TTL:         testTTL,
			SessionTTL:  ttl,
			Logger:      c.log,
		},
		ClientListen:   "127.0.0.1:0",
		RequestTimeout: 3 * time.Second,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	chat.SetupGate(g)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := g.Start(ctx); err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.gates[id] = g
	c.mu.Unlock()
	return g
}

// TestReliableRedisDown: with Redis down a reliable send answers an error
// frame (never "ok": nothing is stored), a resume answers an error frame,
// the connections stay; once Redis is back both work and nothing
// acknowledged is missing.
func TestReliableRedisDown(t *testing.T) {
	skipShort(t)
	c, rs := newClusterRedis(t)
	g1 := c.startGate("gate-1")
	c.startBackend("im-1", chat.GroupIM)
	c.waitGroupSize(chat.GroupIM, 1, 5*time.Second)
	alice := dial(t, g1)
	chatkit.Login(t, alice, "alice")
	bob := &reader{t: t}
	conn := dial(t, g1)
	chatkit.Login(t, conn, "bob")
	bob.resume(conn)
	rsend(t, alice, "bob", "before")
	bob.waitTexts(1)
	carol := dial(t, g1)
	chatkit.Login(t, carol, "carol")

	if err := rs.Stop(); err != nil {
		t.Fatal(err)
	}
	_ = alice.Send(chat.MsgReliable, chatkit.MustJSON(t, chat.SendRequest{To: "bob", Text: "during"}))
	if e := decodeError(t, chatkit.Expect(t, alice, gate.MsgError)); e.MsgID != chat.MsgReliable || !strings.Contains(e.Error, "cannot store") {
		t.Fatalf("reliable send while Redis is down: %+v", e)
	}
	// carol logged in before the outage; her resume during it fails with
	// an error frame, and works once Redis is back.
	_ = carol.Send(inbox.MsgResume, inbox.ResumeRequest{}.Append(nil))
	if e := decodeError(t, chatkit.Expect(t, carol, gate.MsgError)); e.MsgID != inbox.MsgResume || !strings.Contains(e.Error, "resume unavailable") {
		t.Fatalf("resume while Redis is down: %+v", e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := rs.Start(ctx); err != nil {
		t.Fatal(err)
	}
	rsend(t, alice, "bob", "after")
	wantTexts(t, bob.waitTexts(2), "alice:before", "alice:after")
	// The test's redis-server has no persistence: it came back empty, so
	// the inbox has a new epoch and bob was told (gap) before the message.
	if _, _, _, ans := bob.snapshot(); len(ans) != 2 || ans[1].Status != inbox.StatusGap || ans[1].Epoch == ans[0].Epoch {
		t.Fatalf("answers after an empty Redis restart: %+v", ans)
	}
	cr := &reader{t: t}
	cr.resume(carol)
	rsend(t, alice, "carol", "welcome back")
	wantTexts(t, cr.waitTexts(1), "alice:welcome back")
}

// TestReliablePipelinedKeepsOrder: a sender that sends many reliable
// messages without waiting for the acks (the handler defers its answer, so
// several appends of the session are in flight) still has them stored and
// delivered in its order, and gets every answer, reliable or not, in the
// order of its requests.
func TestReliablePipelinedKeepsOrder(t *testing.T) {
	c := newCluster(t)
	g1, g2 := c.startGate("gate-1"), c.startGate("gate-2")
	c.startBackend("im-1", chat.GroupIM)
	c.startBackend("im-2", chat.GroupIM)
	c.waitGroupSize(chat.GroupIM, 2, 5*time.Second)
	bob := &reader{t: t}
	conn := dial(t, g2)
	chatkit.Login(t, conn, "bob")
	bob.resume(conn)
	testkit.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, _, _, ans := bob.snapshot(); len(ans) == 0 {
			return fmt.Errorf("bob has no resume answer yet")
		}
		return nil
	})
	alice := dial(t, g1)
	chatkit.Login(t, alice, "alice")
	const n = 400
	want := make([]string, n)
	for i := range n {
		want[i] = fmt.Sprintf("alice:%d", i)
		req := chatkit.MustJSON(t, chat.SendRequest{To: "bob", Text: fmt.Sprint(i)})
		_ = alice.Send(chat.MsgReliable, req)
		_ = alice.Send(chat.MsgSend, req) // a plain send between each two: its answer must not overtake
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var offset uint64
	for i := range 2 * n {
		f, err := alice.Recv(ctx)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		wantID := chat.MsgReliable
		if i%2 == 1 {
			wantID = chat.MsgSend
		}
		if f.MsgID != wantID {
			t.Fatalf("answer %d is msgID %d %s, want msgID %d: answers out of request order", i, f.MsgID, f.Payload, wantID)
		}
		if wantID == chat.MsgReliable {
			var r chat.ReliableReply
			if err := json.Unmarshal(f.Payload, &r); err != nil || !r.OK || r.Offset != offset+1 {
				t.Fatalf("reliable answer %d: %s (want offset %d)", i/2, f.Payload, offset+1)
			}
			offset = r.Offset
		}
	}
	wantTexts(t, bob.waitTexts(n), want...)
}
