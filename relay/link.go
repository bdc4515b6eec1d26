package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zcluster/zcluster/internal/runtime/frame"
	"github.com/zcluster/zcluster/internal/runtime/tcpopt"
)

// writerDrain bounds how long a closed link waits for its writer's flush
// goroutine to notice (the connection is closed by then, so it is quick).
const writerDrain = time.Second

// link is one outbound connection to a peer. It is created dialing; ready
// is closed once the dial ends, after which err, conn and w never change.
// One goroutine (run) dials, then reads the connection only to notice its
// end, then tears the link down.
type link struct {
	r     *Relay
	id    string
	addr  string
	ready chan struct{}
	err   error // dial outcome, set before ready is closed
	conn  net.Conn
	w     *frame.Writer

	dropped bool // guarded by Relay.mu: DropPeer or Close, no OnLinkDown

	once   sync.Once
	failed atomic.Bool
	cause  error // why the link ended, set in fail
}

// wait blocks until the dial ends or ctx is done.
func (l *link) wait(ctx context.Context) (*link, error) {
	select {
	case <-l.ready:
	default:
		select {
		case <-l.ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("relay: waiting for the link to %s: %w", l.id, ctx.Err())
		}
	}
	if l.err != nil {
		return nil, l.err
	}
	return l, nil
}

// isUp reports a finished, successful dial.
func (l *link) isUp() bool {
	select {
	case <-l.ready:
		return l.err == nil
	default:
		return false
	}
}

// fail ends an up link once: it records the cause, closes the connection
// (which ends run's read loop) and removes the link so the next Send
// re-dials. It must not be called with Relay.mu held.
func (l *link) fail(cause error) {
	l.once.Do(func() {
		l.cause = cause
		l.failed.Store(true)
		_ = l.conn.Close()
		r := l.r
		r.mu.Lock()
		if r.links[l.id] == l {
			delete(r.links, l.id)
		}
		r.mu.Unlock()
	})
}

// run is the link's goroutine: dial and authenticate, publish the outcome,
// then watch the connection until it ends.
func (r *Relay) run(l *link) {
	conn, err := r.connect(l.id, l.addr)

	r.mu.Lock()
	switch {
	case r.closed:
		err = ErrClosed
	case l.dropped:
		err = fmt.Errorf("%w: %s", ErrLinkDropped, l.id)
	}
	if err != nil {
		if conn != nil {
			_ = conn.Close()
		}
		if r.links[l.id] == l {
			delete(r.links, l.id)
		}
		failed := errors.Is(err, ErrDial) || errors.Is(err, ErrHandshake)
		var f dialFailure
		if failed {
			f = r.failures[l.id]
			f.count++
			f.until = time.Now().Add(r.cfg.RedialBackoff)
			f.err = err
			r.failures[l.id] = f
		}
		l.err = err
		close(l.ready)
		r.mu.Unlock()
		if failed {
			r.stats.dialFail.Add(1)
			level := slog.LevelWarn
			if f.count > 1 {
				level = slog.LevelDebug
			}
			r.log.Log(context.Background(), level, "link dial failed", "peer", l.id, "addr", l.addr, "failures", f.count, "cause", err)
		}
		return
	}
	delete(r.failures, l.id)
	l.conn = conn
	l.w = frame.NewWriter(conn, frame.WriterConfig{
		MaxPending: r.cfg.MaxPending,
		OnError:    func(err error) { l.fail(err) },
	})
	close(l.ready)
	r.mu.Unlock()
	r.stats.linksUp.Add(1)
	r.log.Debug("link up", "peer", l.id, "addr", l.addr)

	l.watch()
}

// watch reads the link until it ends (the listener never sends after
// Accept, so a read returning is the end), then tears it down.
func (l *link) watch() {
	r := l.r
	buf := make([]byte, 256)
	for {
		if _, err := l.conn.Read(buf); err != nil {
			l.fail(err)
			break
		}
	}
	l.w.Close()
	_ = l.w.Flush(writerDrain) // wait for a flush in progress to give up
	r.mu.Lock()
	quiet := l.dropped || r.closed
	fns := r.downFns
	r.mu.Unlock()
	if quiet {
		r.log.Debug("link closed", "peer", l.id)
		return
	}
	cause := l.cause
	if errors.Is(cause, frame.ErrQueueFull) {
		cause = fmt.Errorf("%w: %w", ErrBackpressure, cause)
	}
	err := fmt.Errorf("%w: %s: %w", ErrLinkDown, l.id, cause)
	r.stats.linksDown.Add(1)
	if _, left := r.leaving.LoadAndDelete(l.id); left {
		r.log.Debug("link down: the peer left", "peer", l.id, "addr", l.addr)
	} else {
		r.log.Warn("link down", "peer", l.id, "addr", l.addr, "cause", cause)
	}
	for _, fn := range fns {
		fn(l.id, err)
	}
}

// connect dials addr and runs the client handshake, both aborted by Close.
func (r *Relay) connect(id, addr string) (net.Conn, error) {
	// A peer that stops acknowledging (a silent partition) ends the link
	// within LinkTimeout, idle or not.
	d := tcpopt.Dialer(r.cfg.DialTimeout, r.cfg.LinkTimeout)
	conn, err := d.DialContext(r.ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %s at %s: %w", ErrDial, id, addr, err)
	}
	_ = conn.SetDeadline(time.Now().Add(r.cfg.HandshakeTimeout))
	stop := context.AfterFunc(r.ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	sc, err := r.secure(conn, addr) // TLS, when on, wraps conn
	if err == nil {
		err = clientHandshake(sc, r.secret, r.nodeID, []byte(id), r.cfg.TLS)
	}
	if !stop() && err == nil {
		err = r.ctx.Err()
	}
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("%w: %s at %s: %w", ErrHandshake, id, addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return sc, nil
}
