package deploy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aceld/zinx/ziface"
	"github.com/aceld/zinx/znet"

	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/internal/tools/zclient"
)

// reply is the outcome of one echo request of a load client.
type reply struct {
	client int
	sent   time.Time
	at     time.Time // when the answer came (or the wait gave up)
	ok     bool      // the echo came back
	errFr  bool      // an error frame came back
	text   string    // the error frame, or why nothing came back
}

// silenceBound is how long a load client waits for an answer before it
// counts the request as unanswered (silence): well past the gate's request
// timeout (10s), which turns any lost request into an error frame.
const silenceBound = 20 * time.Second

// load is a set of logged-in clients, each sending echo requests (msgID 4,
// routed to group im) one at a time and recording every outcome.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	out    []reply
}

// startLoad connects n clients, spread over addrs, logs each in as
// prefix-i and starts their request loops (one request every pace).
func startLoad(t *testing.T, addrs []string, n int, prefix string, pace time.Duration) *load {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	conns := make([]*zclient.Conn, n)
	for i := range conns {
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := zclient.Dial(dctx, addrs[i%len(addrs)])
		dcancel()
		if err != nil {
			cancel()
			t.Fatalf("load client %d: %v", i, err)
		}
		conns[i] = c
		if err := login(ctx, c, fmt.Sprintf("%s-%d", prefix, i)); err != nil {
			cancel()
			t.Fatalf("load client %d: %v", i, err)
		}
	}
	for i, c := range conns {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer c.Close()
			l.run(ctx, i, c, pace)
		}()
	}
	t.Cleanup(l.stop)
	return l
}

func login(ctx context.Context, c *zclient.Conn, user string) error {
	if err := c.Send(chat.MsgLogin, []byte(user)); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		f, err := c.Recv(ctx)
		if err != nil {
			return fmt.Errorf("login %s: %w", user, err)
		}
		switch f.MsgID {
		case chat.MsgLogin:
			if !bytes.Contains(f.Payload, []byte(`"ok":true`)) {
				return fmt.Errorf("login %s: %s", user, f.Payload)
			}
			return nil
		case chat.MsgError:
			return fmt.Errorf("login %s: error frame %s", user, f.Payload)
		}
	}
}

func (l *load) run(ctx context.Context, i int, c *zclient.Conn, pace time.Duration) {
	for seq := 0; ctx.Err() == nil; seq++ {
		payload := []byte(strconv.Itoa(i) + "-" + strconv.Itoa(seq))
		r := reply{client: i, sent: time.Now()}
		if err := c.Send(chat.MsgEcho, payload); err != nil {
			r.at, r.text = time.Now(), "send: "+err.Error()
			l.record(r)
			return
		}
		wctx, cancel := context.WithTimeout(ctx, silenceBound)
		for {
			f, err := c.Recv(wctx)
			if err != nil {
				r.text = "no answer: " + err.Error()
				break
			}
			if f.MsgID == chat.MsgEcho && bytes.Equal(f.Payload, payload) {
				r.ok = true
				break
			}
			if f.MsgID == chat.MsgError {
				r.errFr, r.text = true, string(f.Payload)
				break
			}
			// A late echo of an earlier request, or a push: skip.
		}
		cancel()
		if !r.ok && !r.errFr && ctx.Err() != nil {
			return // stopped while waiting: not an outcome
		}
		r.at = time.Now()
		l.record(r)
		if !r.ok && !r.errFr {
			return // the connection ended or went silent
		}
		select {
		case <-ctx.Done():
		case <-time.After(pace):
		}
	}
}

func (l *load) record(r reply) {
	l.mu.Lock()
	l.out = append(l.out, r)
	l.mu.Unlock()
}

// stop ends the request loops and waits for them.
func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
}

// replies returns a copy of the outcomes so far.
func (l *load) replies() []reply {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]reply(nil), l.out...)
}

// summary counts outcomes of requests sent at or after since.
type summary struct {
	ok, errFrames, silent int
	firstErrs             []string
}

func (s summary) String() string {
	return fmt.Sprintf("%d answered, %d error frames, %d unanswered; first errors %q", s.ok, s.errFrames, s.silent, s.firstErrs)
}

func summarize(rs []reply, since time.Time) summary {
	var s summary
	for _, r := range rs {
		if r.sent.Before(since) {
			continue
		}
		switch {
		case r.ok:
			s.ok++
			continue
		case r.errFr:
			s.errFrames++
		default:
			s.silent++
		}
		if len(s.firstErrs) < 5 {
			s.firstErrs = append(s.firstErrs, r.text)
		}
	}
	return s
}

// waitAnswers waits until at least n more requests were answered.
func (l *load) waitAnswers(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	start := len(l.replies())
	deadline := time.Now().Add(timeout)
	for len(l.replies())-start < n {
		if time.Now().After(deadline) {
			t.Fatalf("load: fewer than %d answers in %v: %v", n, timeout, summarize(l.replies()[start:], time.Time{}))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// zinxClient is an unmodified zinx client (znet.NewClient, default pack).
type zinxClient struct {
	cli    ziface.IClient
	frames chan zclient.Frame
}

type frameRouter struct {
	znet.BaseRouter
	out chan zclient.Frame
}

func (r *frameRouter) Handle(req ziface.IRequest) {
	r.out <- zclient.Frame{MsgID: req.GetMsgID(), Payload: append([]byte(nil), req.GetData()...)}
}

func newZinxClient(t *testing.T, addr string) *zinxClient {
	t.Helper()
	host, portS, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(portS)
	zc := &zinxClient{frames: make(chan zclient.Frame, 64)}
	zc.cli = znet.NewClient(host, port)
	for _, id := range []uint32{chat.MsgLogin, chat.MsgSend, chat.MsgEcho, chat.MsgDelivered, chat.MsgError} {
		zc.cli.AddRouter(id, &frameRouter{out: zc.frames})
	}
	ready := make(chan struct{})
	zc.cli.SetOnConnStart(func(ziface.IConnection) { close(ready) })
	zc.cli.Start()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatalf("zinx client did not connect to %s", addr)
	}
	t.Cleanup(zc.cli.Stop)
	return zc
}

func (z *zinxClient) send(t *testing.T, msgID uint32, data []byte) {
	t.Helper()
	if err := z.cli.Conn().SendMsg(msgID, data); err != nil {
		t.Fatal(err)
	}
}

// next returns the next frame with msgID or an error frame, within d.
func (z *zinxClient) next(msgID uint32, d time.Duration) (zclient.Frame, bool) {
	deadline := time.After(d)
	for {
		select {
		case f := <-z.frames:
			if f.MsgID == msgID || f.MsgID == chat.MsgError {
				return f, true
			}
		case <-deadline:
			return zclient.Frame{}, false
		}
	}
}
