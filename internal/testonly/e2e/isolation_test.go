package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zcluster/zcluster/backend"
	zccluster "github.com/zcluster/zcluster/cluster"
	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/internal/testonly/testkit"
	"github.com/zcluster/zcluster/internal/testonly/testkit/chatkit"
	"github.com/zcluster/zcluster/internal/tools/zclient"
)

// startBackendTuned is startBackend with a Config the test adjusts (nil:
// none) and the handlers of setup (none: the chat app).
func (c *cluster) startBackendTuned(id, group string, adjust func(*backend.Config), setup ...func(*backend.Backend)) *backend.Backend {
	c.t.Helper()
	cli, rdb := c.clients()
	cfg := backend.Config{
		Node: zccluster.Node{
			ID:          id,
			RelayListen: "127.0.0.1:0",
			Etcd:        cli,
			Redis:       rdb,
			Secret:      c.secret,
			TTL:         testTTL,
			SessionTTL:  testSessionTTL,
			Logger:      c.log,
		},
		Group:       group,
		CallTimeout: 3 * time.Second,
	}
	if adjust != nil {
		adjust(&cfg)
	}
	b, err := backend.New(cfg)
	if err != nil {
		c.t.Fatalf("backend %s: %v", id, err)
	}
	if len(setup) == 0 {
		if err := chat.SetupBackend(b); err != nil {
			c.t.Fatal(err)
		}
	}
	for _, s := range setup {
		s(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		c.t.Fatalf("backend %s start: %v", id, err)
	}
	c.mu.Lock()
	c.backends[id] = b
	c.mu.Unlock()
	return b
}

// victimStats is what one well-behaved client saw.
type victimStats struct {
	sent, answered, errors int
	errText                string
	latencies              []time.Duration
}

// runVictim sends an echo (msgID 4) every interval until stop, each
// carrying its send time, and counts answers and error frames until every
// request is answered or grace has passed after stop.
func runVictim(conn *zclient.Conn, interval time.Duration, stop <-chan struct{}, grace time.Duration) victimStats {
	var st victimStats
	var mu sync.Mutex
	readDone := make(chan struct{})
	var sentN atomic.Int64
	go func() {
		defer close(readDone)
		for f := range conn.Frames() {
			mu.Lock()
			switch f.MsgID {
			case chat.MsgEcho:
				if len(f.Payload) == 8 {
					sent := time.Unix(0, int64(binary.BigEndian.Uint64(f.Payload)))
					st.latencies = append(st.latencies, time.Since(sent))
				}
				st.answered++
			case gate.MsgError:
				st.errors++
				st.errText = string(f.Payload)
			}
			done := int64(st.answered+st.errors) >= sentN.Load()
			mu.Unlock()
			select {
			case <-stop:
				if done {
					return
				}
			default:
			}
		}
	}()
	tick := time.NewTicker(interval)
	defer tick.Stop()
loop:
	for {
		select {
		case <-stop:
			break loop
		case <-tick.C:
			var p [8]byte
			binary.BigEndian.PutUint64(p[:], uint64(time.Now().UnixNano()))
			if err := conn.Send(chat.MsgEcho, p[:]); err != nil {
				break loop
			}
			sentN.Add(1)
		}
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	for {
		mu.Lock()
		done := int64(st.answered+st.errors) >= sentN.Load()
		mu.Unlock()
		if done {
			break
		}
		select {
		case <-readDone:
		case <-t.C:
		case <-time.After(10 * time.Millisecond):
			continue
		}
		break
	}
	mu.Lock()
	defer mu.Unlock()
	st.sent = int(sentN.Load())
	st.latencies = slices.Clone(st.latencies)
	return st
}

// TestIsolationFloodVersusVictims is issue 9's flood case: with the echo
// group absent, one logged-in client floods chain-echo (msgID 3; each
// request holds its session on the im node about 1 s while the Call waits
// for a node of the echo group) while 20 clients on the same gate and the
// same im node send an echo every 20 ms. The victims see no error and no
// lost answer and stay fast; the flooder gets "busy" error frames (its own
// session's queue is full) or is held back.
func TestIsolationFloodVersusVictims(t *testing.T) {
	c := newCluster(t)
	g := c.startGate("gate-1")
	b := c.startBackendTuned("im-1", chat.GroupIM, func(cfg *backend.Config) { cfg.QueueLen = 16 })
	_ = b
	c.waitGroupSize(chat.GroupIM, 1, 5*time.Second)

	const victims, interval, floodN = 20, 20 * time.Millisecond, 2000
	vconns := make([]*zclient.Conn, victims)
	for i := range vconns {
		vconns[i] = dial(t, g)
		chatkit.Login(t, vconns[i], fmt.Sprintf("victim-%d", i))
	}
	flooder := dial(t, g)
	chatkit.Login(t, flooder, "flooder")

	var busy, floodErrs, floodAnswers atomic.Int64
	var otherErr atomic.Value
	go func() {
		for f := range flooder.Frames() {
			switch f.MsgID {
			case gate.MsgError:
				floodErrs.Add(1)
				if e := string(f.Payload); strings.Contains(e, "busy") {
					busy.Add(1)
				} else {
					otherErr.Store(e)
				}
			case chat.MsgChainEcho:
				floodAnswers.Add(1)
			}
		}
	}()
	var floodWritten atomic.Int64
	floodDone := make(chan struct{})
	go func() {
		defer close(floodDone)
		for i := 0; i < floodN; i++ {
			if err := flooder.Send(chat.MsgChainEcho, []byte("flood")); err != nil {
				return
			}
			floodWritten.Add(1)
		}
	}()
	// Let the flood reach the node before the victims start.
	testkit.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := floodWritten.Load(); n < 100 {
			return fmt.Errorf("flooder wrote %d requests", n)
		}
		return nil
	})

	stop := make(chan struct{})
	results := make([]victimStats, victims)
	var wg sync.WaitGroup
	for i, conn := range vconns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = runVictim(conn, interval, stop, 5*time.Second)
		}()
	}
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()

	var all []time.Duration
	sent, answered, errs, lost := 0, 0, 0, 0
	for i, r := range results {
		sent += r.sent
		answered += r.answered
		errs += r.errors
		lost += r.sent - r.answered - r.errors
		all = append(all, r.latencies...)
		if r.errors > 0 {
			t.Errorf("victim %d got %d error frames, last %s", i, r.errors, r.errText)
		}
	}
	slices.Sort(all)
	p99 := time.Duration(0)
	if len(all) > 0 {
		p99 = all[min(len(all)-1, len(all)*99/100)]
	}
	t.Logf("victims: sent %d, answered %d, errors %d, unanswered %d, p50 %v, p99 %v; flooder: wrote %d, busy %d, other errors %d, answers %d",
		sent, answered, errs, lost, pct(all, 50), p99, floodWritten.Load(), busy.Load(), floodErrs.Load()-busy.Load(), floodAnswers.Load())
	if sent < victims*50 {
		t.Errorf("victims sent only %d requests in 3 s", sent)
	}
	if lost != 0 {
		t.Errorf("%d victim requests unanswered", lost)
	}
	if p99 > time.Second {
		t.Errorf("victims' p99 %v, want well under the flooder's stall (< 1s)", p99)
	}
	select {
	case <-floodDone:
		if busy.Load() == 0 {
			t.Errorf("the flooder wrote all %d requests and got no busy error (other error: %v)", floodN, otherErr.Load())
		}
	default: // held back: the gate stopped reading it
	}
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}
