package backend

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/zcluster/zcluster/cluster"
	"github.com/zcluster/zcluster/relay"
)

// unstarted returns a backend built by New but not started: its stores
// point nowhere and are never used.
func unstarted(t *testing.T, adjust func(*Config)) *Backend {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:1"}, DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = rdb.Close(); _ = cli.Close() })
	cfg := Config{Node: cluster.Node{ID: "im-1", Etcd: cli, Redis: rdb, Insecure: true}, Group: "im"}
	if adjust != nil {
		adjust(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestEarlyEnvelope: an envelope that reaches the relay before Start has
// set up the workers (a gate with a stale view of this node's address)
// waits in its session's queue instead of crashing the node.
func TestEarlyEnvelope(t *testing.T) {
	s := unstarted(t, nil)
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("an early envelope panics: %v", r)
		}
	}()
	s.onEnvelope(&relay.Envelope{Kind: relay.KindForward, Seq: 1, MsgID: 4, Session: []byte("s1"), Source: []byte("gate-1"), Payload: []byte("hi")})
	s.onEnvelope(&relay.Envelope{Kind: relay.KindCall, Seq: 2, MsgID: 4, Session: []byte("s1"), Source: []byte("im-2"), Payload: []byte("hi")})
	if n := s.Queued(); n != 2 {
		t.Fatalf("Queued() = %d after two early envelopes, want 2", n)
	}
	_ = s.Shutdown(context.Background())
}

// TestDispatcherOrderAndExclusion: one session's messages run in order and
// never two at a time, while different sessions run in parallel.
func TestDispatcherOrderAndExclusion(t *testing.T) {
	d := newDispatcher(1<<20, 1<<30, 1<<30)
	d.start()
	const sessions, per, workers = 20, 500, 8
	var (
		mu      sync.Mutex
		last    = map[string]int{}
		running = map[string]bool{}
		maxPar  int
		par     int
		wg      sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				q, it, ok := d.next()
				if !ok {
					return
				}
				mu.Lock()
				if running[q.key] {
					t.Errorf("session %s runs on two workers", q.key)
				}
				running[q.key] = true
				par++
				maxPar = max(maxPar, par)
				if want := last[q.key] + 1; int(it.seq) != want {
					t.Errorf("session %s: seq %d after %d", q.key, it.seq, last[q.key])
				}
				last[q.key] = int(it.seq)
				mu.Unlock()
				time.Sleep(10 * time.Microsecond)
				mu.Lock()
				running[q.key] = false
				par--
				mu.Unlock()
				d.done(q, it)
			}
		}()
	}
	var senders sync.WaitGroup
	for s := range sessions {
		senders.Add(1)
		go func() {
			defer senders.Done()
			sid := []byte(fmt.Sprint("s", s))
			for i := 1; i <= per; i++ {
				if r := d.enqueue([]byte("gate-1"), sid, nil, uint64(i), 4, []byte("x")); r != accepted {
					t.Errorf("enqueue refused: %d", r)
				}
			}
		}()
	}
	senders.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, b := d.stats(); b == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	d.close()
	wg.Wait()
	for s := range sessions {
		if n := last[fmt.Sprint("s", s)]; n != per {
			t.Errorf("session s%d ran %d of %d", s, n, per)
		}
	}
	if maxPar < 2 {
		t.Errorf("at most %d sessions ran at once with %d workers", maxPar, workers)
	}
	// Idle queues are forgotten after a whole sweep period.
	d2 := newDispatcher(10, 1<<20, 1<<20)
	d2.start()
	d2.enqueue(nil, []byte("a"), nil, 1, 4, nil)
	q, it, _ := d2.next()
	d2.done(q, it)
	if n := d2.sweep(); n != 0 {
		t.Errorf("sweep forgot %d queues idle for less than a period", n)
	}
	if n := d2.sweep(); n != 1 {
		t.Errorf("second sweep forgot %d queues, want 1", n)
	}
	if n, _ := d2.stats(); n != 0 {
		t.Errorf("%d session queues kept after the sweep", n)
	}
}

// BenchmarkDispatch measures queueing one message and taking it off again
// (the echo path's share of the dispatcher), with a 64-byte payload. The
// one allocation per message is the payload's own buffer, which the
// handler owns; the queueing itself allocates nothing.
func BenchmarkDispatch(b *testing.B) {
	for _, size := range []int{0, 64} {
		b.Run(fmt.Sprintf("payload=%d", size), func(b *testing.B) {
			d := newDispatcher(256, 4<<20, 64<<20)
			d.start()
			src, payload := []byte("gate-1"), make([]byte, size)
			sids := make([][]byte, 64)
			for i := range sids {
				sids[i] = fmt.Appendf(nil, "session-%02d", i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				d.enqueue(src, sids[i%len(sids)], []byte("user"), uint64(i), 4, payload)
				q, it, _ := d.next()
				d.done(q, it)
			}
		})
	}
}
