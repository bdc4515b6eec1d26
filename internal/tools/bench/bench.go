// Package bench is the load generator behind `zcluster bench`. It speaks
// stock zinx TLV frames and measures one scenario at a time:
//
//	direct     a stock zinx echo server (router + SendMsg), in-process
//	plain      a plain Go bufio echo server that flushes when its input drains
//	echo       client -> gate -> backend (msgID 4) -> gate -> client
//	ws-echo    echo over the gate's WebSocket listener
//	kcp-echo   echo over the gate's KCP (reliable UDP) listener
//	send       user to user (msgID 2) across two gates, counting deliveries (100)
//	broadcast  one sender, msgID 5 fanned out (101) to every session on every gate
//	reliable   as send, with the reliable msgID 6 (backend.Deliver: stored in the
//	           recipient's Redis inbox, then pushed); receivers resume first and
//	           count each offset once, in order
//	room       every session in one room; one sender's msgID 21 pushed to the
//	           room (121): one relay envelope per gate, fanned out by the gates
//
// For echo, send and broadcast it starts a cluster in this process (embedded
// etcd, a Redis, gates and im backends running the chat demo) unless gate
// addresses are given. Every request carries its send time, so latency is
// measured per answer; answers are counted, so lost = expected - answered -
// errors is exact.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/zcluster/zcluster/inbox"
)

// Scenarios lists the scenario names in the order they are documented.
var Scenarios = []string{"direct", "plain", "echo", "ws-echo", "kcp-echo", "send", "broadcast", "room", "reliable"}

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("bench: invalid configuration")

// Config describes one run.
type Config struct {
	// Scenario is one of Scenarios.
	Scenario string
	// Conns is the number of client connections (default 50). For send it
	// is the number of sender/receiver pairs; for broadcast the number of
	// sessions (the first one sends).
	Conns int
	// Window is how many requests each sending connection keeps in flight
	// (default 8).
	Window int
	// Payload is the request payload size in bytes (default 64; at least 16
	// are used for the send time).
	Payload int
	// Duration is the measured interval (default 5s); Warmup runs before it
	// and is not measured (default 1s, or Duration/5 when that is shorter).
	Duration time.Duration
	Warmup   time.Duration
	// Rate caps the requests per second over all sending connections
	// (0: as fast as the window allows), e.g. to compare latency at the
	// same load.
	Rate float64
	// Drain bounds the wait for outstanding answers after the load stops
	// (default 5s); whatever is still missing then is lost.
	Drain time.Duration
	// Gates are client addresses of running gates to target (for ws-echo,
	// their WebSocket URLs); empty starts a cluster in this process (for
	// echo, ws-echo, send and broadcast).
	Gates []string
	// Redis is the address whose INFO commandstats is read when Gates are
	// given (empty: not measured).
	Redis string
	// ClusterGates and Backends size the in-process cluster (defaults: 1
	// gate for echo, 2 for send and broadcast; 1 im backend).
	ClusterGates int
	Backends     int
	// Logger receives the cluster's logs (default: discarded below warn).
	Logger *slog.Logger

	// dropEvery makes the plain server swallow every n-th request of each
	// connection; gotPlain receives that server (tests).
	dropEvery int
	gotPlain  func(*plainServer)
}

func (c *Config) setDefaults() {
	if c.Conns == 0 {
		c.Conns = 50
	}
	if c.Window == 0 {
		c.Window = 8
	}
	if c.Payload == 0 {
		c.Payload = 64
	}
	if c.Duration == 0 {
		c.Duration = 5 * time.Second
	}
	if c.Warmup == 0 {
		c.Warmup = min(time.Second, c.Duration/5)
	}
	if c.Drain == 0 {
		c.Drain = 5 * time.Second
	}
	if c.Backends == 0 {
		c.Backends = 1
	}
	if c.ClusterGates == 0 {
		c.ClusterGates = 1
		if c.Scenario == "send" || c.Scenario == "broadcast" || c.Scenario == "room" || c.Scenario == "reliable" {
			c.ClusterGates = 2
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

func (c *Config) validate() error {
	known := false
	for _, s := range Scenarios {
		known = known || s == c.Scenario
	}
	switch {
	case !known:
		return fmt.Errorf("%w: unknown scenario %q (want one of %s)", ErrConfig, c.Scenario, strings.Join(Scenarios, ", "))
	case c.Conns < 1 || c.Conns > 100000:
		return fmt.Errorf("%w: --conns %d: want 1 to 100000", ErrConfig, c.Conns)
	case c.Window < 1 || c.Window > 4096:
		return fmt.Errorf("%w: --window %d: want 1 to 4096", ErrConfig, c.Window)
	case c.Payload < 1 || c.Payload > 60000:
		return fmt.Errorf("%w: --payload %d: want 1 to 60000", ErrConfig, c.Payload)
	case c.Rate < 0:
		return fmt.Errorf("%w: --rate %v: want 0 (unlimited) or more", ErrConfig, c.Rate)
	case c.Duration <= 0 || c.Warmup < 0 || c.Drain <= 0:
		return fmt.Errorf("%w: durations must be positive", ErrConfig)
	case c.ClusterGates < 1 || c.Backends < 1:
		return fmt.Errorf("%w: cluster needs at least one gate and one backend", ErrConfig)
	}
	return nil
}

// Result is what one run measured.
type Result struct {
	Scenario string `json:"scenario"`
	Target   string `json:"target"`
	Conns    int    `json:"conns"`
	Window   int    `json:"window"`
	Payload  int    `json:"payload"`
	// Seconds is the measured interval.
	Seconds float64 `json:"seconds"`
	// MsgsPerSec counts answers (echo) or deliveries (send, broadcast)
	// received during the measured interval.
	MsgsPerSec float64 `json:"msgs_per_sec"`
	P50us      float64 `json:"p50_us"`
	P99us      float64 `json:"p99_us"`
	P999us     float64 `json:"p999_us"`
	// CPUSecPer100k is this process's CPU time (user+system, getrusage)
	// per 100k messages during the measured interval: the servers or the
	// cluster nodes AND the load generator. Zero when targeting --gates.
	CPUSecPer100k float64 `json:"cpu_s_per_100k"`
	// LoadgenCPUShare is the load generator's share of this process's CPU
	// during the measured interval, from a CPU profile in which its
	// goroutines carry a pprof label (-1: not measured, e.g. another CPU
	// profile was running). ClusterCPUSecPer100k is CPUSecPer100k without
	// that share: the servers' or cluster nodes' own cost (runtime work
	// such as the network poller is not labelled and counts as theirs).
	LoadgenCPUShare      float64 `json:"loadgen_cpu_share"`
	ClusterCPUSecPer100k float64 `json:"cluster_cpu_s_per_100k"`
	// AllocsPerMsg is heap allocations of this process per message (the
	// load generator itself allocates nothing per message in steady state);
	// -1 when targeting --gates.
	AllocsPerMsg float64 `json:"allocs_per_msg"`
	// SyscallsPerMsg is read plus write system calls of this process per
	// message (/proc/self/io syscr+syscw), load generator included; -1
	// when targeting --gates.
	SyscallsPerMsg float64 `json:"syscalls_per_msg"`
	// RedisCmdsPerMsg is Redis commands (INFO commandstats, INFO itself
	// excluded) per delivered message during the measured interval; -1
	// when not measured.
	RedisCmdsPerMsg float64 `json:"redis_cmds_per_msg"`
	// RedisCPUSecPer100k is the Redis server's CPU (INFO cpu) per 100k
	// messages; -1 when not measured.
	RedisCPUSecPer100k float64 `json:"redis_cpu_s_per_100k"`
	// RedisCallsPerMsg is, for reliable in an in-process cluster, the
	// backends' Redis round trips for inbox appends per delivered message
	// (appends are pipelined); -1 otherwise.
	RedisCallsPerMsg float64 `json:"redis_calls_per_msg"`
	// InboxScriptsPerMsg is, for reliable in an in-process cluster, the
	// append scripts run per delivered message (one user's appends queued
	// together share a script); -1 otherwise.
	InboxScriptsPerMsg float64 `json:"inbox_scripts_per_msg"`
	// RelayPerSent is the relay envelopes the backends sent per request
	// sent during the measured interval (room: the room pushes, one per
	// gate with members, plus the forward's done); -1 when not measured.
	RelayPerSent float64 `json:"relay_envelopes_per_sent"`
	// Sent counts requests written; Expected the answers they call for
	// (Sent, or Sent x sessions for broadcast); Answered those received
	// (whenever); Errors error frames or refusals (in answer units); Lost =
	// Expected - Answered - Errors.
	Sent     uint64 `json:"sent"`
	Expected uint64 `json:"expected"`
	Answered uint64 `json:"answered"`
	Errors   uint64 `json:"errors"`
	Lost     int64  `json:"lost"`
}

// Run performs one run. ctx cancels it (what was measured so far is lost).
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return Result{}, err
	}
	res := Result{Scenario: cfg.Scenario, Conns: cfg.Conns, Window: cfg.Window, Payload: cfg.Payload, RedisCmdsPerMsg: -1, RedisCPUSecPer100k: -1, AllocsPerMsg: -1, SyscallsPerMsg: -1, LoadgenCPUShare: -1, RelayPerSent: -1, RedisCallsPerMsg: -1, InboxScriptsPerMsg: -1}

	var addrs []string
	var redisAddr string
	var relaySent func() uint64
	inProcess := true
	var inboxStats func() inbox.Stats // in-process cluster: the backends' inbox counters
	switch cfg.Scenario {
	case "direct", "plain":
		var srv server
		var err error
		if cfg.Scenario == "direct" {
			srv, err = startDirect(msgEcho)
		} else {
			var ps *plainServer
			ps, err = startPlain(cfg.dropEvery)
			if err == nil && cfg.gotPlain != nil {
				cfg.gotPlain(ps)
			}
			srv = ps
		}
		if err != nil {
			return res, err
		}
		defer srv.Close()
		addrs = []string{srv.Addr()}
		res.Target = "in-process " + cfg.Scenario + " server"
	default:
		if len(cfg.Gates) > 0 {
			addrs, redisAddr, inProcess = cfg.Gates, cfg.Redis, false
			res.Target = "gates " + strings.Join(cfg.Gates, ",")
		} else {
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			cl, err := startCluster(sctx, cfg.ClusterGates, cfg.Backends, cfg.Scenario == "room", cfg.Logger)
			cancel()
			if err != nil {
				return res, err
			}
			defer cl.close()
			addrs, redisAddr, relaySent = cl.gateAddrs(), cl.RedisAddr(), cl.relaySent
			inboxStats = cl.inboxStats
			switch cfg.Scenario {
			case "ws-echo":
				addrs = cl.wsURLs()
			case "kcp-echo":
				addrs = cl.kcpAddrs()
			}
			res.Target = fmt.Sprintf("in-process cluster: %d gate(s), %d im backend(s), redis %s", len(cl.Gates()), cfg.Backends, cl.redisKind)
			if cfg.Scenario == "room" {
				res.Target += ", 1 room backend"
			}
		}
	}

	clk := &clock{base: time.Now()}
	senders, receivers, fanout, err := connect(ctx, cfg, addrs, clk)
	all := append(append([]*loadConn(nil), senders...), receivers...)
	defer func() {
		for _, lc := range all {
			lc.close()
		}
	}()
	if err != nil {
		return res, err
	}

	var rdb *redis.Client
	if redisAddr != "" {
		rdb = redis.NewClient(&redis.Options{Addr: redisAddr})
		defer rdb.Close()
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, lc := range receivers {
		lc.start(cfg.Window, stop, &wg)
	}
	for _, lc := range senders {
		if cfg.Rate > 0 {
			lc.interval = time.Duration(float64(len(senders)) / cfg.Rate * float64(time.Second))
		}
		lc.start(cfg.Window, stop, &wg)
	}
	stopOnce := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopOnce()

	if err := sleep(ctx, cfg.Warmup); err != nil {
		return res, err
	}
	var split cpuSplit
	if inProcess {
		split.start()
	}
	a := snapshot(ctx, all, rdb)
	if inboxStats != nil {
		a.inbox = inboxStats()
	}
	sentA, relayA := sentBy(senders), uint64(0)
	if relaySent != nil {
		relayA = relaySent()
	}
	clk.measuring.Store(true)
	if err := sleep(ctx, cfg.Duration); err != nil {
		split.stop()
		return res, err
	}
	b := snapshot(ctx, all, rdb)
	if inboxStats != nil {
		b.inbox = inboxStats()
	}
	if relaySent != nil {
		if n := sentBy(senders) - sentA; n > 0 {
			res.RelayPerSent = float64(relaySent()-relayA) / float64(n)
		}
	}
	clk.measuring.Store(false)
	res.LoadgenCPUShare = split.stop()
	stopOnce()

	sec := b.at.Sub(a.at).Seconds()
	msgs := float64(b.answered - a.answered)
	res.Seconds = sec
	if sec > 0 {
		res.MsgsPerSec = msgs / sec
	}
	if msgs > 0 {
		if inProcess {
			res.CPUSecPer100k = (b.cpu - a.cpu) / msgs * 1e5
			if res.LoadgenCPUShare >= 0 {
				res.ClusterCPUSecPer100k = res.CPUSecPer100k * (1 - res.LoadgenCPUShare)
			}
		}
		if inProcess {
			res.AllocsPerMsg = float64(b.allocs-a.allocs) / msgs
			res.SyscallsPerMsg = float64(b.syscalls-a.syscalls) / msgs
		}
		if cfg.Scenario == "reliable" && inboxStats != nil {
			res.RedisCallsPerMsg = float64(b.inbox.RedisCalls-a.inbox.RedisCalls) / msgs
			res.InboxScriptsPerMsg = float64(b.inbox.Scripts-a.inbox.Scripts) / msgs
		}
		if a.redisOK && b.redisOK {
			res.RedisCmdsPerMsg = float64(b.redisCmds-a.redisCmds) / msgs
			res.RedisCPUSecPer100k = (b.redisCPU - a.redisCPU) / msgs * 1e5
		}
	}

	// Drain: wait for the answers still on their way.
	sent := func() uint64 {
		var n uint64
		for _, lc := range senders {
			n += lc.sent.Load()
		}
		return n
	}
	deadline := time.Now().Add(cfg.Drain)
	for {
		c := count(all)
		if c.answered+c.errs*fanout >= sent()*fanout || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, lc := range all {
		lc.close()
	}
	c := count(all)
	res.Sent = sent()
	res.Expected = res.Sent * fanout
	res.Answered = c.answered
	res.Errors = c.errs * fanout
	res.Lost = int64(res.Expected) - int64(res.Answered) - int64(res.Errors)

	var h hist
	for _, lc := range all {
		h.merge(&lc.h)
	}
	us := func(d time.Duration) float64 { return float64(d) / 1e3 }
	res.P50us, res.P99us, res.P999us = us(h.quantile(0.50)), us(h.quantile(0.99)), us(h.quantile(0.999))
	return res, ctx.Err()
}

// connect opens the scenario's connections (logging in where needed) and
// returns the sending ones, the receiving ones, and how many answers each
// request calls for.
func connect(ctx context.Context, cfg Config, addrs []string, clk *clock) (senders, receivers []*loadConn, fanout uint64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	open := func(addr string) (*loadConn, error) {
		var (
			lc  *loadConn
			err error
		)
		switch cfg.Scenario {
		case "ws-echo":
			lc, err = dialWS(ctx, addr, cfg.Window, cfg.Payload)
		case "kcp-echo":
			lc, err = dialKCP(ctx, addr)
		default:
			lc, err = dial(ctx, addr)
		}
		if err != nil {
			return nil, err
		}
		lc.clock = clk
		return lc, nil
	}
	run := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	switch cfg.Scenario {
	case "direct", "plain", "echo", "ws-echo", "kcp-echo":
		for i := range cfg.Conns {
			lc, err := open(addrs[i%len(addrs)])
			if err != nil {
				return senders, nil, 1, err
			}
			lc.build, lc.onFrame = echoBuild(msgEcho, cfg.Payload), echoFrame(msgEcho)
			senders = append(senders, lc)
		}
		return senders, nil, 1, nil
	case "send", "reliable":
		reliable := cfg.Scenario == "reliable"
		for i := range cfg.Conns {
			to := fmt.Sprintf("r%s-%d", run, i)
			rc, err := open(addrs[(i+1)%len(addrs)])
			if err != nil {
				return senders, receivers, 1, err
			}
			receivers = append(receivers, rc)
			rc.onFrame = deliveryFrame(msgDelivered, false)
			if err := rc.login(ctx, to); err != nil {
				return senders, receivers, 1, err
			}
			if reliable {
				rc.onFrame = reliableFrame
				if err := rc.resumeFromNow(ctx); err != nil {
					return senders, receivers, 1, err
				}
			}
			sc, err := open(addrs[i%len(addrs)])
			if err != nil {
				return senders, receivers, 1, err
			}
			senders = append(senders, sc)
			sc.build, sc.onFrame = sendBuild(msgSend, to, max(cfg.Payload, 16)), senderFrame(msgSend)
			if reliable {
				sc.build, sc.onFrame = sendBuild(msgReliable, to, max(cfg.Payload, 16)), senderFrame(msgReliable)
			}
			if err := sc.login(ctx, fmt.Sprintf("s%s-%d", run, i)); err != nil {
				return senders, receivers, 1, err
			}
		}
		return senders, receivers, 1, nil
	case "room":
		room := []byte(benchRoomName)
		for i := range cfg.Conns {
			lc, err := open(addrs[i%len(addrs)])
			if err != nil {
				return senders, receivers, uint64(cfg.Conns), err
			}
			if i == 0 {
				lc.build, lc.onFrame = roomSayBuild(max(cfg.Payload, 16)), deliveryFrame(msgRoomSaid, true)
				senders = append(senders, lc)
			} else {
				lc.onFrame = deliveryFrame(msgRoomSaid, false)
				receivers = append(receivers, lc)
			}
			if err := lc.login(ctx, fmt.Sprintf("m%s-%d", run, i)); err != nil {
				return senders, receivers, uint64(cfg.Conns), err
			}
			if err := lc.request(ctx, msgRoomJoin, room); err != nil {
				return senders, receivers, uint64(cfg.Conns), err
			}
		}
		return senders, receivers, uint64(cfg.Conns), nil
	default: // broadcast
		for i := range cfg.Conns {
			lc, err := open(addrs[i%len(addrs)])
			if err != nil {
				return senders, receivers, uint64(cfg.Conns), err
			}
			if i == 0 {
				lc.build, lc.onFrame = broadcastBuild(max(cfg.Payload, 16)), deliveryFrame(msgBroadcasted, true)
				senders = append(senders, lc)
			} else {
				lc.onFrame = deliveryFrame(msgBroadcasted, false)
				receivers = append(receivers, lc)
			}
			if err := lc.login(ctx, fmt.Sprintf("b%s-%d", run, i)); err != nil {
				return senders, receivers, uint64(cfg.Conns), err
			}
		}
		return senders, receivers, uint64(cfg.Conns), nil
	}
}

type counts struct{ answered, errs uint64 }

func count(all []*loadConn) counts {
	var c counts
	for _, lc := range all {
		c.answered += lc.answered.Load()
		c.errs += lc.errs.Load()
	}
	return c
}

type snap struct {
	at        time.Time
	answered  uint64
	cpu       float64
	allocs    uint64
	syscalls  uint64
	redisOK   bool
	redisCmds uint64
	redisCPU  float64

	inbox inbox.Stats
}

func snapshot(ctx context.Context, all []*loadConn, rdb *redis.Client) snap {
	s := snap{at: time.Now(), answered: count(all).answered, cpu: processCPU(), allocs: heapAllocs(), syscalls: processSyscalls()}
	if rdb != nil {
		s.redisCmds, s.redisCPU, s.redisOK = redisStats(ctx, rdb)
	}
	return s
}

// processCPU returns this process's user+system CPU seconds.
func processCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// heapAllocs returns the number of heap objects allocated so far.
func heapAllocs() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:objects"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// processSyscalls returns syscr+syscw from /proc/self/io (0 elsewhere).
func processSyscalls() uint64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	var n uint64
	for line := range strings.Lines(string(b)) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
		if k == "syscr" || k == "syscw" {
			x, _ := strconv.ParseUint(v, 10, 64)
			n += x
		}
	}
	return n
}

// redisStats sums the calls of every command in INFO commandstats except
// INFO itself, and reads used_cpu_user+used_cpu_sys.
func redisStats(ctx context.Context, rdb *redis.Client) (cmds uint64, cpu float64, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	text, err := rdb.Info(ctx, "commandstats", "cpu").Result()
	if err != nil {
		return 0, 0, false
	}
	found := false
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "cmdstat_"):
			name, rest, _ := strings.Cut(line, ":")
			if name == "cmdstat_info" {
				continue
			}
			for kv := range strings.SplitSeq(rest, ",") {
				if v, ok := strings.CutPrefix(kv, "calls="); ok {
					n, _ := strconv.ParseUint(v, 10, 64)
					cmds += n
					found = true
				}
			}
		case strings.HasPrefix(line, "used_cpu_user:"), strings.HasPrefix(line, "used_cpu_sys:"):
			_, v, _ := strings.Cut(line, ":")
			f, _ := strconv.ParseFloat(v, 64)
			cpu += f
		}
	}
	return cmds, cpu, found
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// sentBy returns the requests the senders have written so far.
func sentBy(senders []*loadConn) uint64 {
	var n uint64
	for _, lc := range senders {
		n += lc.sent.Load()
	}
	return n
}
