package relay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zcluster/zcluster/internal/runtime/frame"
	"github.com/zcluster/zcluster/internal/runtime/zinxkit"
)

// Defaults for the zero fields of Config.
const (
	DefaultMaxFrame         = 1 << 20
	DefaultHandshakeTimeout = 3 * time.Second
	DefaultDialTimeout      = 2 * time.Second
	DefaultMaxPending       = 8 << 20
	DefaultRedialBackoff    = 200 * time.Millisecond
	DefaultLinkTimeout      = time.Second
)

// closeWait bounds how long Close waits for inbound connections to finish
// their last handler call.
const closeWait = 5 * time.Second

// Config describes one node's relay. Zero fields take the defaults above.
type Config struct {
	// NodeID is this node's id, 1-255 bytes (required). Peers see it as
	// the Source of what this node sends.
	NodeID string
	// Listen is host:port for the relay server (port 0 = any free port;
	// empty means "127.0.0.1:0").
	Listen string
	// Secret authenticates every link in both directions; all nodes of a
	// cluster share it. Required unless Insecure.
	Secret []byte
	// Insecure allows an empty Secret, for development only: links still
	// run the handshake, with an empty key, so anyone can join.
	Insecure bool
	// Resolve returns where a peer's relay listens (from the etcd topology).
	// Required. It is not consulted for NodeID itself. It may wait for a
	// peer it does not know yet, no longer than ctx (the sender's) allows.
	Resolve func(ctx context.Context, nodeID string) (addr string, ok bool)
	// MaxFrame bounds one encoded envelope (default 1 MiB). Inbound frames
	// larger than this close the connection; Send refuses larger envelopes
	// with ErrTooLarge. All nodes should agree on it.
	MaxFrame int
	// HandshakeTimeout bounds the handshake on both sides (default 3s): an
	// inbound connection that has not authenticated by then is closed.
	HandshakeTimeout time.Duration
	// DialTimeout bounds the TCP connect of an outbound link (default 2s).
	DialTimeout time.Duration
	// MaxPending is how many bytes may wait on one outbound link before
	// Send fails with ErrBackpressure and the link is reset (default 8 MiB,
	// at least one MaxFrame).
	MaxPending int
	// LinkTimeout is how long data sent on an outbound link may stay
	// unacknowledged by the peer's TCP stack before the link is declared
	// down (Linux TCP_USER_TIMEOUT; an idle link is probed with TCP
	// keepalives every LinkTimeout). Without it a silent partition (packets
	// dropped, no reset) kept a link "up" for the kernel's retransmission
	// limit, about 15 minutes, and every request on it timed out. Default
	// 1s; a frozen peer whose kernel still acknowledges is not detected by
	// it (its lease expiry is).
	LinkTimeout time.Duration
	// RedialBackoff is how long Send returns the last dial or handshake
	// error at once, without dialing, after one failed (default 200ms).
	RedialBackoff time.Duration
	// Logger receives lifecycle events: a link that breaks, refused
	// handshakes and envelopes, failed dials (warn); links opened and
	// closed in the normal course of things (debug). Never one line per
	// message. Default slog.Default().
	Logger *slog.Logger
	// TLS, if set, puts every link under TLS (see TLSConfig); nil means
	// plain TCP.
	TLS *TLSConfig
}

// withDefaults validates c and fills its zero fields.
func (c Config) withDefaults() (Config, error) {
	if c.NodeID == "" || len(c.NodeID) > MaxFieldLen {
		return c, ErrNoNodeID
	}
	if len(c.Secret) == 0 && !c.Insecure {
		return c, ErrNoSecret
	}
	if c.Resolve == nil {
		return c, ErrNoResolver
	}
	if c.TLS != nil {
		t, err := c.TLS.prepare()
		if err != nil {
			return c, err
		}
		if err := t.checkOwnName(c.NodeID); err != nil {
			return c, err
		}
		c.TLS = t
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:0"
	}
	if c.MaxFrame <= 0 {
		c.MaxFrame = DefaultMaxFrame
	}
	if c.MaxFrame < maxAuthLen {
		c.MaxFrame = maxAuthLen
	}
	if c.TLS != nil && c.MaxFrame < maxAuthLen+maxProofLen {
		c.MaxFrame = maxAuthLen + maxProofLen // the Auth carries a certificate proof
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.MaxPending <= 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.MaxPending < c.MaxFrame+frame.HeaderLen {
		c.MaxPending = c.MaxFrame + frame.HeaderLen
	}
	if c.RedialBackoff <= 0 {
		c.RedialBackoff = DefaultRedialBackoff
	}
	if c.LinkTimeout <= 0 {
		c.LinkTimeout = DefaultLinkTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// Handler receives every envelope that arrives on an inbound link. It is
// called on that connection's reader goroutine, in order per link; env and
// its slices are valid only during the call (copy what you keep). Source is
// the authenticated id of the sending node. It must not block for long (it
// holds up its link) and must not call Close.
type Handler func(env *Envelope)

// Stats are cumulative counters since New.
type Stats struct {
	EnvelopesSent     uint64 // envelopes queued on outbound links
	EnvelopesReceived uint64 // envelopes handed to the Handler
	BytesSent         uint64 // bytes queued on outbound links, frame headers included
	HandshakeFailures uint64 // inbound connections refused before authenticating: bad MAC, bad frame, timeout
	LinksUp           uint64 // outbound links established
	LinksDown         uint64 // outbound links that broke (not counting DropPeer and Close)
	DialFailures      uint64 // outbound dials or handshakes that failed
	Refused           uint64 // authenticated inbound links closed for a malformed envelope or unexpected frame
}

type counters struct {
	sent, received, bytes, hsFail, linksUp, linksDown, dialFail, refused atomic.Uint64
}

// Relay is one node's end of the internal links: a server for inbound links
// and one outbound link per peer it sends to. Safe for concurrent use.
//
// Lock order: Relay.mu may be taken while holding inbound.mu (the handshake
// and Handler run under inbound.mu), never the other way round; link.once
// (fail) is never entered with Relay.mu held.
type Relay struct {
	cfg     Config
	handler Handler
	log     *slog.Logger
	nodeID  []byte
	secret  []byte
	ctx     context.Context // cancelled by Close: aborts dials in progress
	cancel  context.CancelFunc
	bufs    sync.Pool // *[]byte encode buffers
	closing atomic.Bool
	stats   counters
	wg      sync.WaitGroup // link goroutines

	mu          sync.RWMutex
	starting    bool // Start was called
	started     bool // the server is up
	closed      bool
	srv         *zinxkit.Server
	addr        string
	links       map[string]*link       // by node id; dialing or up
	failures    map[string]dialFailure // by node id; redial backoff
	inbound     map[*inbound]struct{}  // open accepted connections
	inboundGone chan struct{}          // closed when inbound empties during Close
	downFns     []func(string, error)  // OnLinkDown callbacks
	leaving     sync.Map               // node id -> struct{}: peers that said they are shutting down
	closeOnce   sync.Once
}

// dialFailure remembers a failed dial for the redial backoff.
type dialFailure struct {
	until time.Time
	err   error
	count int // consecutive failures: only the first is logged at warn
}

// New validates cfg and returns a relay that is not yet listening. It fails
// with ErrNoSecret when Secret is empty and Insecure is not set.
func New(cfg Config, h Handler) (*Relay, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if h == nil {
		h = func(*Envelope) {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Relay{
		cfg:      cfg,
		handler:  h,
		log:      cfg.Logger.With("component", "relay", "node", cfg.NodeID),
		nodeID:   []byte(cfg.NodeID),
		secret:   slices.Clone(cfg.Secret),
		ctx:      ctx,
		cancel:   cancel,
		links:    make(map[string]*link),
		failures: make(map[string]dialFailure),
		inbound:  make(map[*inbound]struct{}),
	}
	r.bufs.New = func() any {
		b := make([]byte, 0, 4<<10)
		return &b
	}
	return r, nil
}

// Start starts the relay server on Config.Listen. Call it once.
func (r *Relay) Start() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	if r.starting {
		r.mu.Unlock()
		return fmt.Errorf("relay %s: %w", r.cfg.NodeID, ErrStarted)
	}
	r.starting = true
	r.mu.Unlock()
	certFile, keyFile := r.cfg.listenFiles()
	srv, err := zinxkit.Listen(zinxkit.Config{
		Name:     "relay-" + r.cfg.NodeID,
		Addr:     r.cfg.Listen,
		MaxFrame: r.cfg.MaxFrame,
		// Inbound links only carry the handshake back.
		Writer:   frame.WriterConfig{MaxPending: 64 << 10, WriteTimeout: r.cfg.HandshakeTimeout},
		Logger:   r.log,
		CertFile: certFile,
		KeyFile:  keyFile,
		// With TLS, the TLS handshake gets the same bound as ours.
		HandshakeTimeout: r.cfg.HandshakeTimeout,
	}, serverHandler{r})
	if err != nil {
		r.mu.Lock()
		r.starting = false
		r.mu.Unlock()
		return fmt.Errorf("relay %s: %w", r.cfg.NodeID, err)
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		srv.Stop()
		return ErrClosed
	}
	r.srv, r.addr, r.started = srv, srv.Addr(), true
	r.mu.Unlock()
	if len(r.secret) == 0 {
		r.log.Warn("relay is insecure: links authenticate with an empty key", "addr", srv.Addr())
	}
	r.log.Debug("relay listening", "addr", srv.Addr())
	return nil
}

// Addr returns the address the server listens on, with the actual port; ""
// before Start.
func (r *Relay) Addr() string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.addr
}

// NodeID returns this node's id.
func (r *Relay) NodeID() string { return r.cfg.NodeID }

// OnLinkDown registers fn to run when an outbound link breaks (the peer
// closed it, a write failed, its queue overflowed), not when it is closed
// by DropPeer or Close. fn runs on the link's goroutine after the link is
// gone, so a Send from fn re-dials; it must not call Close. It may be
// registered at any time; earlier registration sees every break.
func (r *Relay) OnLinkDown(fn func(nodeID string, err error)) {
	if fn == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.downFns = append(r.downFns, fn)
}

// Send queues env for nodeID and returns once it is queued, not when it is
// delivered: an envelope queued on a link that then breaks is lost (the
// OnLinkDown callbacks tell). The first Send to a peer dials and
// authenticates; concurrent first Sends share that one dial, and ctx only
// bounds this caller's wait for it. The Source written on the wire is this
// node's id; env is not modified.
//
// Sending to this node itself goes through the network like any other
// peer: a loopback link to our own server, so the Handler runs on that
// link's reader goroutine, in order, with Source = NodeID, never on the
// caller's goroutine.
//
// Errors wrap ErrUnknownPeer (Resolve does not know nodeID), ErrDial,
// ErrHandshake, ErrBackpressure, ErrTooLarge, ErrFieldTooLong,
// ErrUnknownKind, ErrLinkDown, ErrNotStarted, ErrClosed, or ctx's error.
func (r *Relay) Send(ctx context.Context, nodeID string, env *Envelope) error {
	bp := r.bufs.Get().(*[]byte)
	defer r.putBuf(bp)
	buf, err := r.encode((*bp)[:0], env)
	*bp = buf
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		l, err := r.getLink(ctx, nodeID)
		if err != nil {
			return err
		}
		err = l.w.WriteRaw(buf)
		if err == nil {
			r.stats.sent.Add(1)
			r.stats.bytes.Add(uint64(len(buf)))
			return nil
		}
		if errors.Is(err, frame.ErrQueueFull) {
			// The writer's OnError has already reset the link.
			return fmt.Errorf("%w: link to %s: %w", ErrBackpressure, nodeID, err)
		}
		// The link broke under us: nothing of this envelope was queued, so
		// one retry on a fresh link cannot duplicate it.
		l.fail(err)
		if attempt > 0 {
			return fmt.Errorf("%w: %s: %w", ErrLinkDown, nodeID, err)
		}
	}
}

// SendIfLinked is Send over an outbound link to nodeID that is already up:
// it never dials, and returns ErrNoLink when there is none. It is for
// notices that matter only to peers this node talks to, such as the one a
// stopping node sends (a stopping node must not open links only to close
// them).
func (r *Relay) SendIfLinked(ctx context.Context, nodeID string, env *Envelope) error {
	r.mu.RLock()
	l, err := r.links[nodeID], r.usableLocked()
	r.mu.RUnlock()
	if err != nil {
		return err
	}
	if l == nil || !l.isUp() || l.failed.Load() {
		return fmt.Errorf("%w: %s", ErrNoLink, nodeID)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	bp := r.bufs.Get().(*[]byte)
	defer r.putBuf(bp)
	buf, err := r.encode((*bp)[:0], env)
	*bp = buf
	if err != nil {
		return err
	}
	if err := l.w.WriteRaw(buf); err != nil {
		if errors.Is(err, frame.ErrQueueFull) {
			return fmt.Errorf("%w: link to %s: %w", ErrBackpressure, nodeID, err)
		}
		l.fail(err)
		return fmt.Errorf("%w: %s: %w", ErrLinkDown, nodeID, err)
	}
	r.stats.sent.Add(1)
	r.stats.bytes.Add(uint64(len(buf)))
	return nil
}

func (r *Relay) putBuf(bp *[]byte) {
	if cap(*bp) > 64<<10 {
		return
	}
	*bp = (*bp)[:0]
	r.bufs.Put(bp)
}

// encode appends env as one FrameEnvelope frame, stamped with our id.
func (r *Relay) encode(dst []byte, env *Envelope) ([]byte, error) {
	e := *env
	e.Source = r.nodeID
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, 0, 0, 0, 0)
	dst, err := e.Append(dst)
	if err != nil {
		return dst[:start], err
	}
	n := len(dst) - start - frame.HeaderLen
	if n > r.cfg.MaxFrame {
		return dst[:start], fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, n, r.cfg.MaxFrame)
	}
	binary.BigEndian.PutUint32(dst[start:], FrameEnvelope)
	binary.BigEndian.PutUint32(dst[start+4:], uint32(n))
	return dst, nil
}

// LinkUp reports whether the outbound link to nodeID is established, so
// that a Send to it does not wait for a dial.
func (r *Relay) LinkUp(nodeID string) bool {
	r.mu.RLock()
	l := r.links[nodeID]
	r.mu.RUnlock()
	return l != nil && l.isUp()
}

// getLink returns the live link to id, dialing it if there is none.
func (r *Relay) getLink(ctx context.Context, id string) (*link, error) {
	r.mu.RLock()
	l, err := r.links[id], r.usableLocked()
	r.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	if l != nil {
		return l.wait(ctx)
	}
	return r.dialLink(ctx, id)
}

// usableLocked says why Send cannot run, if it cannot.
func (r *Relay) usableLocked() error {
	switch {
	case r.closed:
		return ErrClosed
	case !r.started:
		return ErrNotStarted
	}
	return nil
}

// dialLink creates the link to id (or joins a dial another Send started)
// and waits for it.
func (r *Relay) dialLink(ctx context.Context, id string) (*link, error) {
	r.mu.RLock()
	f, backoff := r.failures[id]
	r.mu.RUnlock()
	if backoff && time.Now().Before(f.until) {
		return nil, f.err
	}
	addr, ok := r.resolve(ctx, id)
	if !ok {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrUnknownPeer, id, err)
		}
		return nil, fmt.Errorf("%w: %s", ErrUnknownPeer, id)
	}
	r.mu.Lock()
	if err := r.usableLocked(); err != nil {
		r.mu.Unlock()
		return nil, err
	}
	l := r.links[id]
	if l == nil {
		if f, ok := r.failures[id]; ok && time.Now().Before(f.until) {
			r.mu.Unlock()
			return nil, f.err
		}
		l = &link{r: r, id: id, addr: addr, ready: make(chan struct{})}
		r.links[id] = l
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.run(l)
		}()
	}
	r.mu.Unlock()
	return l.wait(ctx)
}

// resolve returns where id's relay listens; our own id is our own server.
func (r *Relay) resolve(ctx context.Context, id string) (string, bool) {
	if id == r.cfg.NodeID {
		a := r.Addr()
		return loopback(a), a != ""
	}
	addr, ok := r.cfg.Resolve(ctx, id)
	return addr, ok && addr != ""
}

// loopback turns a listen address on an unspecified host into one that
// can be dialed.
func loopback(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	switch ip := net.ParseIP(host); {
	case host == "" || (ip != nil && ip.IsUnspecified() && ip.To4() != nil):
		return net.JoinHostPort("127.0.0.1", port)
	case ip != nil && ip.IsUnspecified():
		return net.JoinHostPort("::1", port)
	}
	return addr
}

// DropPeer closes the outbound link to nodeID (the peer left the cluster)
// without running the OnLinkDown callbacks, and forgets its redial
// backoff. Envelopes still queued on the link are discarded. A later Send
// re-dials.
func (r *Relay) DropPeer(nodeID string) {
	r.mu.Lock()
	l := r.links[nodeID]
	if l != nil {
		l.dropped = true
		delete(r.links, nodeID)
	}
	delete(r.failures, nodeID)
	up := l != nil && l.isUp()
	r.mu.Unlock()
	if up {
		l.fail(fmt.Errorf("%w: %s", ErrLinkDropped, nodeID))
	}
}

// Peers returns the ids of the nodes with a live outbound link, sorted.
func (r *Relay) Peers() []string {
	r.mu.RLock()
	ids := make([]string, 0, len(r.links))
	for id, l := range r.links {
		if l.isUp() && !l.failed.Load() {
			ids = append(ids, id)
		}
	}
	r.mu.RUnlock()
	slices.Sort(ids)
	return ids
}

// Stats returns a snapshot of the counters.
func (r *Relay) Stats() Stats {
	s := &r.stats
	return Stats{
		EnvelopesSent:     s.sent.Load(),
		EnvelopesReceived: s.received.Load(),
		BytesSent:         s.bytes.Load(),
		HandshakeFailures: s.hsFail.Load(),
		LinksUp:           s.linksUp.Load(),
		LinksDown:         s.linksDown.Load(),
		DialFailures:      s.dialFail.Load(),
		Refused:           s.refused.Load(),
	}
}

// PeerLeaving records that nodeID announced it is shutting down (or left
// etcd), so the end of the link to it is expected: it is logged at debug,
// not as a failure.
// OnLinkDown callbacks still run.
func (r *Relay) PeerLeaving(nodeID string) { r.leaving.Store(nodeID, struct{}{}) }

// closeFlush bounds how long Close waits for queued envelopes to be written.
const closeFlush = 3 * time.Second

// Close stops the server, writes what is queued on outbound links (for at
// most closeFlush), closes every link and waits for the relay's goroutines;
// after it returns the Handler is not called again. Safe to call twice and
// concurrently.
func (r *Relay) Close() {
	r.closeOnce.Do(func() {
		r.closing.Store(true)
		r.mu.Lock()
		r.closed = true
		links := make([]*link, 0, len(r.links))
		for _, l := range r.links {
			if l.isUp() {
				links = append(links, l)
			}
		}
		clear(r.links)
		srv := r.srv
		in := make([]*inbound, 0, len(r.inbound))
		for c := range r.inbound {
			in = append(in, c)
		}
		var gone chan struct{}
		if len(r.inbound) > 0 {
			gone = make(chan struct{})
			r.inboundGone = gone
		}
		r.mu.Unlock()

		r.cancel()
		// Deliver what is already queued (a stopping backend's last
		// replies), within a bound, before the links go.
		deadline := time.Now().Add(closeFlush)
		for _, l := range links {
			if d := time.Until(deadline); d > 0 {
				_ = l.w.Flush(d)
			}
		}
		for _, l := range links {
			l.fail(ErrClosed)
		}
		// A write in flight ends with the connection: wait for the
		// writers' goroutines too.
		for _, l := range links {
			_ = l.w.Flush(closeFlush)
		}
		if srv != nil {
			srv.Stop()
		}
		// zinx's Stop only reaches the connections it registered in time;
		// close ours too, then wait until each has run its OnClose (which
		// waits for a Handler call in progress).
		for _, c := range in {
			c.conn.Close()
		}
		if gone != nil {
			t := time.NewTimer(closeWait)
			select {
			case <-gone:
			case <-t.C:
				r.log.Warn("relay close: inbound connections did not finish in time", "wait", closeWait)
			}
			t.Stop()
		}
		r.wg.Wait()
		if srv != nil {
			r.log.Debug("relay closed")
		}
	})
}
