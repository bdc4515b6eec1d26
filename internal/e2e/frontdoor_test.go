package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/internal/frame"
	"github.com/zcluster/zcluster/internal/testkit"
	"github.com/zcluster/zcluster/internal/testkit/chatkit"
	"github.com/zcluster/zcluster/internal/zclient"
)

// The gate's front door (issue 9): per-connection backpressure and the
// client port limits. Each test keeps an honest client busy meanwhile and
// checks it never notices.

// readFrames reads stock zinx TLV frames from r until it fails, calling fn
// for each.
func readFrames(r io.Reader, fn func(msgID uint32, payload []byte)) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var h [frame.HeaderLen]byte
	for {
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return err
		}
		p := make([]byte, binary.BigEndian.Uint32(h[4:8]))
		if _, err := io.ReadFull(br, p); err != nil {
			return err
		}
		fn(binary.BigEndian.Uint32(h[0:4]), p)
	}
}

// victim sends one echo at a time until stop and records the slowest answer
// and anything that went wrong.
type victim struct {
	sent    atomic.Int64
	slowest atomic.Int64 // nanoseconds
	cancel  context.CancelFunc
	done    chan struct{}
	err     error
}

func startVictim(conn *zclient.Conn) *victim {
	ctx, cancel := context.WithCancel(context.Background())
	v := &victim{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(v.done)
		for n := 0; ctx.Err() == nil; n++ {
			want := fmt.Sprintf("victim-%d", n)
			start := time.Now()
			if err := conn.Send(chat.MsgEcho, []byte(want)); err != nil {
				v.err = err
				return
			}
			wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
			f, skipped, err := conn.Expect(wctx, chat.MsgEcho)
			wcancel()
			if err == nil && string(f.Payload) != want {
				err = fmt.Errorf("echo %q, want %q", f.Payload, want)
			}
			if err != nil {
				v.err = fmt.Errorf("echo %d: %w (skipped %s)", n, err, chatkit.Describe(skipped))
				return
			}
			if d := int64(time.Since(start)); d > v.slowest.Load() {
				v.slowest.Store(d)
			}
			v.sent.Add(1)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return v
}

// stop ends the victim and fails the test if it was hurt: an error, a lost
// answer, or one answer slower than bound (generous: "stuck", not "slow").
func (v *victim) stop(t *testing.T, bound time.Duration) {
	t.Helper()
	v.cancel()
	<-v.done
	if v.err != nil {
		t.Fatalf("the other client was affected: %v", v.err)
	}
	if s := time.Duration(v.slowest.Load()); s > bound {
		t.Fatalf("the other client waited %v for an echo (bound %v)", s, bound)
	}
	t.Logf("other client: %d echoes, slowest %v", v.sent.Load(), time.Duration(v.slowest.Load()))
}

// TestPipelinedRequestsAllAnswered: one client that writes 10,000 echo
// requests of 4 KiB (40 MiB) without waiting for answers (a stock zinx client, raw TLV frames)
// gets 10,000 answers, no error frame; the gate pushes back on it through
// TCP (--max-inflight) instead of overrunning its links; another client on
// the same gate is served throughout.
func TestPipelinedRequestsAllAnswered(t *testing.T) {
	const n, size = 10000, 4096
	c := newCluster(t)
	g := c.startGate("gate-1")
	c.startBackend("im-1", chat.GroupIM)
	c.waitGroupSize(chat.GroupIM, 1, 10*time.Second)

	other := dial(t, g)
	chatkit.Login(t, other, "victim")
	v := startVictim(other)

	nc, err := net.DialTimeout("tcp", g.ListenAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var echoes, errs atomic.Int64
	seen := make([]bool, n)
	var dup atomic.Int64
	readDone := make(chan error, 1)
	go func() {
		readDone <- readFrames(nc, func(msgID uint32, p []byte) {
			switch {
			case msgID == chat.MsgEcho && len(p) == size:
				i := binary.BigEndian.Uint64(p)
				if i < n && seen[i] {
					dup.Add(1)
				} else if i < n {
					seen[i] = true
				}
				if echoes.Add(1) == n {
					_ = nc.SetReadDeadline(time.Now()) // all in: stop reading
				}
			case msgID == chat.MsgError:
				if errs.Add(1) <= 3 {
					t.Logf("error frame: %s", p)
				}
			}
		})
	}()
	writeDone := make(chan error, 1)
	go func() {
		buf := make([]byte, 0, n*(frame.HeaderLen+size))
		p := make([]byte, size)
		for i := range n {
			binary.BigEndian.PutUint64(p, uint64(i))
			buf = frame.Append(buf, chat.MsgEcho, p)
		}
		_ = nc.SetWriteDeadline(time.Now().Add(90 * time.Second))
		_, err := nc.Write(buf) // one write: the gate sees them all at once
		writeDone <- err
	}()
	if err := <-writeDone; err != nil {
		t.Fatalf("writing %d requests: %v (answers so far %d, error frames %d)", n, err, echoes.Load(), errs.Load())
	}
	select {
	case <-readDone:
	case <-time.After(90 * time.Second):
		_ = nc.Close()
		<-readDone
	}
	if echoes.Load() != n || errs.Load() != 0 || dup.Load() != 0 {
		t.Fatalf("%d requests: %d echoes (%d duplicates), %d error frames", n, echoes.Load(), dup.Load(), errs.Load())
	}
	v.stop(t, 3*time.Second)
}

// msgHold is answered by a backend only once the test lets it go.
const msgHold uint32 = 610

// setupHold runs the chat app plus msgHold, whose handler waits for
// release (or the backend's stop) before it answers.
func setupHold(release <-chan struct{}) func(*backend.Server) {
	return func(b *backend.Server) {
		_ = chat.SetupBackend(b)
		b.Handle(msgHold, "hold", func(c *backend.Context) error {
			select {
			case <-release:
			case <-c.Context().Done():
			}
			return c.Reply(msgHold, c.Payload())
		}, backend.Anonymous())
	}
}

// TestInflightLimitBlocksOnlyItsConnection: a client with --max-inflight
// requests unanswered is not read any further (its next requests wait
// in TCP, none is forwarded), while another client is served; a kick of
// the blocked connection closes it at once, and so does Shutdown, without
// waiting for the answers (no reader left blocked).
func TestInflightLimitBlocksOnlyItsConnection(t *testing.T) {
	const limit = 4
	c := newCluster(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // runs before the cluster stops
	g := c.startGateWith("gate-1", func(cfg *gate.Config) {
		cfg.MaxInflight = limit
		cfg.RequestTimeout = time.Minute // only the limit may unblock it
	})
	c.startBackend("im-1", chat.GroupIM, setupHold(release))
	c.waitGroupSize(chat.GroupIM, 1, 10*time.Second)

	greedy := dial(t, g)
	chatkit.Login(t, greedy, "greedy")
	for i := range 3 * limit {
		if err := greedy.Send(msgHold, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	testkit.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if p := g.Pending(); p != limit {
			return fmt.Errorf("%d requests forwarded, want %d", p, limit)
		}
		return nil
	})
	other := dial(t, g)
	chatkit.Login(t, other, "other")
	v := startVictim(other)
	time.Sleep(300 * time.Millisecond)
	if p := g.Pending(); p != limit {
		t.Fatalf("%d requests forwarded, past the limit of %d", p, limit)
	}
	v.stop(t, 3*time.Second)

	// A kick (the same user logs in elsewhere) closes the blocked
	// connection now, not when its answers come.
	takeover := dial(t, g)
	chatkit.Login(t, takeover, "greedy")
	select {
	case <-greedy.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the blocked connection was not closed by the kick")
	}
	testkit.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := g.Sessions(); n != 2 {
			return fmt.Errorf("gate holds %d sessions, want 2 (the kicked one gone)", n)
		}
		return nil
	})

	// Shutdown with a blocked reader returns promptly.
	for i := range 2 * limit {
		if err := takeover.Send(msgHold, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	testkit.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if p := g.Pending(); p != 2*limit {
			return fmt.Errorf("%d requests forwarded, want %d (the kicked one's and the new one's)", p, 2*limit)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	if err := g.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("shutdown with a blocked reader took %v", d)
	}
}
