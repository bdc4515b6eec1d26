package scale

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/internal/devstack/embedetcd"
	"github.com/zcluster/zcluster/internal/runtime/frame"
	"github.com/zcluster/zcluster/internal/testonly/testkit"
)

// Shape of TestManyNodes. ZC_SCALE_CONNS overrides the connection count.
const (
	manyGates    = 5
	manyIM       = 6
	manyEcho     = 2
	manyConns    = 5000
	manyMessages = 10 // per user, each to the user logged in on the next gate
)

// TestManyNodes runs 5 gates and 8 backends (6 im + 2 echo), each a
// separate zcluster process, with 5,000 client connections spread evenly
// over the gates, logged in as distinct users. Every user sends 10 messages
// (msgID 2) to the user on the next gate, waiting for each acknowledgement
// before the next; every message must be delivered (msgID 100) exactly
// once, from the right sender, in order. Then every user sends one
// chain-echo (im calls echo) and must get its bytes back. It logs the figures: connections,
// messages, times, and VmRSS of every gate idle and loaded.
func TestManyNodes(t *testing.T) {
	needScale(t)
	conns := manyConns
	if v := os.Getenv("ZC_SCALE_CONNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < manyGates*2 || n%manyGates != 0 {
			t.Fatalf("ZC_SCALE_CONNS=%q", v)
		}
		conns = n
	}
	// The clients' side only: the gates are other processes.
	raiseNoFile(t, uint64(conns)+2000)
	zclusterBinary(t) // build before the clock starts

	ctx := waitCtx(t, 3*time.Minute)
	e, err := embedetcd.Start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	redisAddr := testkit.Redis(t)
	etcdList := strings.Join(e.Endpoints(), ",")
	common := []string{"--etcd", etcdList, "--redis", redisAddr, "--secret", testSecret,
		"--ttl", "5s", "--session-ttl", "30s"}

	// Start every node at once; a second each at most, in parallel.
	start := time.Now()
	gates := make([]*proc, manyGates)
	gateAddrs := make([]string, manyGates)
	backends := make([]*proc, manyIM+manyEcho)
	var wg sync.WaitGroup
	for i := range manyGates {
		id := fmt.Sprintf("gate-%d", i+1)
		wg.Go(func() {
			gates[i] = startProcRetry(t, id, func() []string {
				a := freeAddrs(t, 2)
				gateAddrs[i] = a[0]
				// Connections sit idle between the phases while every
				// gate's memory is read: longer than the default 60s idle
				// timeout on a slow machine.
				return append([]string{"gate", "--id", id, "--listen", a[0], "--relay", a[1], "--idle-timeout", "5m"}, common...)
			})
		})
	}
	for i := range manyIM + manyEcho {
		group, n := chat.GroupIM, i+1
		if i >= manyIM {
			group, n = chat.GroupEcho, i-manyIM+1
		}
		id := fmt.Sprintf("%s-%d", group, n)
		wg.Go(func() {
			backends[i] = startProcRetry(t, id, func() []string {
				return append([]string{"backend", "--id", id, "--group", group, "--relay", freeAddrs(t, 1)[0]}, common...)
			})
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	testkit.CheckFor(t, 60*time.Second, 100*time.Millisecond, func() error {
		for _, p := range append(gates[:len(gates):len(gates)], backends...) {
			if err := p.alive(); err != nil {
				t.Fatal(err)
			}
		}
		for group, want := range map[string]int64{"gate": manyGates, chat.GroupIM: manyIM, chat.GroupEcho: manyEcho} {
			resp, err := cli.Get(ctx, "/zcluster/nodes/"+group+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				return err
			}
			if resp.Count != want {
				return fmt.Errorf("%d nodes in %s, want %d", resp.Count, group, want)
			}
		}
		return nil
	})
	nodesUp := time.Since(start)
	// Let every gate's watch see every backend before the first message.
	time.Sleep(500 * time.Millisecond)
	idle := gateRSS(t, gates)

	// Connect and log in.
	st := newLoadStats(conns)
	clients := make([]*loadConn, conns)
	loginStart := time.Now()
	dialErrs := parallel(conns, 64, func(i int) error {
		c, err := dialLoad(ctx, gateAddrs[i%manyGates], i, st)
		if err != nil {
			return err
		}
		clients[i] = c
		return c.send(chat.MsgLogin, []byte(userName(i)))
	})
	t.Cleanup(func() {
		for _, c := range clients {
			if c != nil {
				c.close()
			}
		}
	})
	if dialErrs != nil {
		t.Fatal(dialErrs)
	}
	testkit.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		if err := st.err(); err != nil {
			t.Fatal(err)
		}
		if n := st.logins.Load(); n != int64(conns) {
			return fmt.Errorf("%d of %d logged in", n, conns)
		}
		return nil
	})
	loginTime := time.Since(loginStart)
	loaded := gateRSS(t, gates)

	// Every user sends manyMessages messages to the next user (on the next
	// gate), one at a time: each acknowledgement triggers the next send.
	msgStart := time.Now()
	for i := range clients {
		if err := clients[i].sendChat(0); err != nil {
			t.Fatal(err)
		}
	}
	total := int64(conns * manyMessages)
	testkit.CheckFor(t, 90*time.Second, 50*time.Millisecond, func() error {
		if err := st.err(); err != nil {
			t.Fatal(err)
		}
		if d, a := st.delivered.Load(), st.acked.Load(); d != total || a != total {
			return fmt.Errorf("%d of %d delivered, %d acknowledged", d, total, a)
		}
		return nil
	})
	msgTime := time.Since(msgStart)
	afterMsgs := gateRSS(t, gates)
	// Nothing more arrives: no duplicates.
	time.Sleep(300 * time.Millisecond)
	if err := st.err(); err != nil {
		t.Fatal(err)
	}
	if d := st.delivered.Load(); d != total {
		t.Fatalf("%d deliveries, want exactly %d", d, total)
	}
	for i := range clients {
		if got := clients[i].next.Load(); got != manyMessages {
			t.Fatalf("%s received %d messages, want %d", userName(i), got, manyMessages)
		}
	}

	// The echo group too: one chain-echo (gate -> im -> echo -> im -> gate)
	// per user.
	echoStart := time.Now()
	for i := range clients {
		if err := clients[i].send(chat.MsgChainEcho, []byte(userName(i))); err != nil {
			t.Fatal(err)
		}
	}
	testkit.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		if err := st.err(); err != nil {
			t.Fatal(err)
		}
		if n := st.echoed.Load(); n != int64(conns) {
			return fmt.Errorf("%d of %d chain-echoes answered", n, conns)
		}
		return nil
	})
	echoTime := time.Since(echoStart)

	var idleSum, loadedSum, peakSum int64
	var lines []string
	for i := range gates {
		idleSum += idle[i]
		loadedSum += loaded[i]
		peakSum += afterMsgs[i]
		lines = append(lines, fmt.Sprintf("gate-%d %d/%d/%d", i+1, idle[i]/1024, loaded[i]/1024, afterMsgs[i]/1024))
	}
	perGate := conns / manyGates
	var bsum int64
	for _, b := range backends {
		r, err := b.rssKiB()
		if err == nil {
			bsum += r
		}
	}
	self, _ := rssOf(os.Getpid())
	t.Logf("nodes: %d gates + %d im + %d echo processes up in %v", manyGates, manyIM, manyEcho, nodesUp.Round(time.Millisecond))
	t.Logf("connections: %d (%d per gate), all logged in as distinct users in %v", conns, perGate, loginTime.Round(time.Millisecond))
	t.Logf("messages: %d user-to-user across gates, %d delivered (100%%), %d acknowledged, in %v (%.0f msg/s)",
		total, st.delivered.Load(), st.acked.Load(), msgTime.Round(time.Millisecond), float64(total)/msgTime.Seconds())
	t.Logf("chain-echo through im and echo: %d of %d answered in %v", st.echoed.Load(), conns, echoTime.Round(time.Millisecond))
	t.Logf("gate VmRSS MiB idle/logged-in/after messages: %s", strings.Join(lines, ", "))
	t.Logf("gate VmRSS mean: idle %.1f MiB, with %d connections %.1f MiB, after messages %.1f MiB; about %.1f KiB per connection",
		float64(idleSum)/manyGates/1024, perGate, float64(loadedSum)/manyGates/1024, float64(peakSum)/manyGates/1024,
		float64(peakSum-idleSum)/float64(conns))
	t.Logf("backends VmRSS mean %.1f MiB; test process (clients, etcd) %.1f MiB", float64(bsum)/float64(len(backends))/1024, float64(self)/1024)
}

func userName(i int) string { return fmt.Sprintf("u%05d", i) }

// gateRSS reads VmRSS (KiB) of every gate.
func gateRSS(t *testing.T, gates []*proc) []int64 {
	t.Helper()
	out := make([]int64, len(gates))
	for i, g := range gates {
		r, err := g.rssKiB()
		if err != nil {
			t.Fatalf("%s: %v", g.name, err)
		}
		out[i] = r
	}
	return out
}

// raiseNoFile raises the soft RLIMIT_NOFILE to at least want (up to the
// hard limit), restoring it at cleanup; the child processes inherit it.
func raiseNoFile(t *testing.T, want uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= want {
		return
	}
	old := lim
	lim.Cur = min(want, lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("setrlimit: %v", err)
	}
	if lim.Cur < want {
		t.Logf("RLIMIT_NOFILE raised to the hard limit %d, below the %d wanted", lim.Cur, want)
	}
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// parallel runs fn(0..n-1) on at most workers goroutines and returns the
// first error.
func parallel(n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// loadStats are the counters of all load connections.
type loadStats struct {
	n         int
	logins    atomic.Int64
	acked     atomic.Int64
	delivered atomic.Int64
	echoed    atomic.Int64
	mu        sync.Mutex
	first     error
}

func newLoadStats(n int) *loadStats { return &loadStats{n: n} }

func (s *loadStats) fail(err error) {
	s.mu.Lock()
	if s.first == nil {
		s.first = err
	}
	s.mu.Unlock()
}

func (s *loadStats) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first
}

// loadConn is a lightweight client connection for the load test: one
// reader goroutine, no buffered channel of frames.
type loadConn struct {
	i    int
	nc   net.Conn
	st   *loadStats
	wmu  sync.Mutex
	sent atomic.Int64 // messages sent
	next atomic.Int64 // index of the next message expected from the previous user
	done chan struct{}
}

func dialLoad(ctx context.Context, addr string, i int, st *loadStats) (*loadConn, error) {
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	nc, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	c := &loadConn{i: i, nc: nc, st: st, done: make(chan struct{})}
	go c.read()
	return c, nil
}

func (c *loadConn) send(msgID uint32, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := c.nc.Write(frame.Append(nil, msgID, payload))
	return err
}

// sendChat sends message k to the next user.
func (c *loadConn) sendChat(k int64) error {
	to := userName((c.i + 1) % c.st.n)
	b, _ := json.Marshal(chat.SendRequest{To: to, Text: strconv.FormatInt(k, 10)})
	c.sent.Add(1)
	return c.send(chat.MsgSend, b)
}

func (c *loadConn) close() {
	_ = c.nc.Close()
	<-c.done
}

func (c *loadConn) read() {
	defer close(c.done)
	r := bufio.NewReaderSize(c.nc, 4096)
	var hdr [frame.HeaderLen]byte
	from := userName((c.i - 1 + c.st.n) % c.st.n)
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if !errors.Is(err, net.ErrClosed) && c.sent.Load() < manyMessages {
				c.st.fail(fmt.Errorf("%s: connection ended: %w", userName(c.i), err))
			}
			return
		}
		p := make([]byte, binary.BigEndian.Uint32(hdr[4:]))
		if _, err := io.ReadFull(r, p); err != nil {
			c.st.fail(fmt.Errorf("%s: %w", userName(c.i), err))
			return
		}
		switch id := binary.BigEndian.Uint32(hdr[:4]); id {
		case chat.MsgLogin:
			var lr chat.LoginReply
			if err := json.Unmarshal(p, &lr); err != nil || !lr.OK {
				c.st.fail(fmt.Errorf("%s: login: %s", userName(c.i), p))
				continue
			}
			c.st.logins.Add(1)
		case chat.MsgSend:
			var sr chat.SendReply
			if err := json.Unmarshal(p, &sr); err != nil || !sr.OK {
				c.st.fail(fmt.Errorf("%s: send: %s", userName(c.i), p))
				continue
			}
			c.st.acked.Add(1)
			if k := c.sent.Load(); k < manyMessages {
				if err := c.sendChat(k); err != nil {
					c.st.fail(fmt.Errorf("%s: send: %w", userName(c.i), err))
				}
			}
		case chat.MsgChainEcho:
			if string(p) != userName(c.i) {
				c.st.fail(fmt.Errorf("%s: chain-echo answered %q", userName(c.i), p))
				continue
			}
			c.st.echoed.Add(1)
		case chat.MsgDelivered:
			var m chat.Message
			if err := json.Unmarshal(p, &m); err != nil {
				c.st.fail(fmt.Errorf("%s: delivery %q: %w", userName(c.i), p, err))
				continue
			}
			want := c.next.Add(1) - 1
			if m.From != from || m.Text != strconv.FormatInt(want, 10) {
				c.st.fail(fmt.Errorf("%s: got %+v, want message %d from %s", userName(c.i), m, want, from))
			}
			c.st.delivered.Add(1)
		default:
			c.st.fail(fmt.Errorf("%s: unexpected frame %d %q", userName(c.i), id, p))
		}
	}
}
