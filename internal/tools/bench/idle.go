package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aceld/zinx/zconf"
)

// IdleResult is the memory that idle client connections cost a server.
type IdleResult struct {
	Target string `json:"target"`
	Conns  int    `json:"conns"`
	// RSSPerConn is the growth of this process's VmRSS per connection,
	// minus what the client side of the connection costs (measured against
	// a listener that only holds connections).
	RSSPerConn float64 `json:"rss_bytes_per_conn"`
	// InUsePerConn is the growth of live heap objects plus goroutine stacks
	// per connection (after a GC), minus the client side's.
	InUsePerConn float64 `json:"inuse_bytes_per_conn"`
}

// IdleReport compares a gate with a bare zinx server.
type IdleReport struct {
	Results []IdleResult `json:"results"`
	// Ratio is the gate's RSS per connection over bare zinx's.
	Ratio float64 `json:"ratio_rss_gate_over_zinx"`
}

type memSnap struct{ rss, inuse float64 }

func memNow() memSnap {
	runtime.GC()
	debug.FreeOSMemory()
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"}}
	metrics.Read(s)
	var m memSnap
	for _, x := range s {
		if x.Value.Kind() == metrics.KindUint64 {
			m.inuse += float64(x.Value.Uint64())
		}
	}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
				m.rss = kb * 1024
			}
		}
	}
	return m
}

// holdServer accepts connections and only keeps them: the baseline that
// measures the client side (and the accepted socket's bare fd).
type holdServer struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	done  chan struct{}
}

func startHold() (*holdServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &holdServer{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(h.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.mu.Unlock()
		}
	}()
	return h, nil
}

func (h *holdServer) Addr() string { return h.ln.Addr().String() }

func (h *holdServer) Close() {
	_ = h.ln.Close()
	<-h.done
	h.mu.Lock()
	for _, c := range h.conns {
		_ = c.Close()
	}
	h.mu.Unlock()
}

// measureIdle opens n idle connections to addr, waits until the server has
// had time to set them up, and returns the memory growth per connection.
func measureIdle(ctx context.Context, addr string, n int, settle time.Duration) (memSnap, error) {
	before := memNow()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	var d net.Dialer
	for range n {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return memSnap{}, fmt.Errorf("bench: idle conn %d: %w", len(conns)+1, err)
		}
		conns = append(conns, c)
	}
	if err := sleep(ctx, settle); err != nil {
		return memSnap{}, err
	}
	after := memNow()
	return memSnap{rss: (after.rss - before.rss) / float64(n), inuse: (after.inuse - before.inuse) / float64(n)}, nil
}

// Idle measures what n idle client connections cost a bare zinx server
// (stock configuration, 1 KiB read buffer) and a gate of an in-process
// cluster, each net of the client side. Client and servers share this
// process, so n is bounded by half the open-file limit.
func Idle(ctx context.Context, n int) (IdleReport, error) {
	var rep IdleReport
	settle := 2 * time.Second
	hold, err := startHold()
	if err != nil {
		return rep, err
	}
	base, err := measureIdle(ctx, hold.Addr(), n, settle)
	hold.Close()
	if err != nil {
		return rep, err
	}
	add := func(target string, m memSnap) {
		rep.Results = append(rep.Results, IdleResult{Target: target, Conns: n, RSSPerConn: m.rss - base.rss, InUsePerConn: m.inuse - base.inuse})
	}

	zs, err := startDirectDefault()
	if err != nil {
		return rep, err
	}
	zm, err := measureIdle(ctx, zs.Addr(), n, settle)
	zs.Close()
	// zinx reads its buffer size from the process-wide config for every new
	// connection: put back the 4 KiB zinxkit runs the gate with.
	zinxMu.Lock()
	zconf.GlobalObject.IOReadBuffSize = 4096
	zinxMu.Unlock()
	if err != nil {
		return rep, err
	}
	add("bare zinx server", zm)

	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	cl, err := startCluster(cctx, 1, 1, false, nil)
	cancel()
	if err != nil {
		return rep, err
	}
	defer cl.close()
	gm, err := measureIdle(ctx, cl.Gates()[0].ClientAddr(), n, settle)
	if err != nil {
		return rep, err
	}
	add("gate", gm)
	if zm.rss-base.rss > 0 {
		rep.Ratio = (gm.rss - base.rss) / (zm.rss - base.rss)
	}
	return rep, nil
}
