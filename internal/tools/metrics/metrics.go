// Package metrics exposes a zcluster node to Prometheus: it implements the
// gate and backend Observer hooks, collects the nodes' status accessors at
// scrape time, times Redis and etcd calls (a go-redis hook and gRPC client
// interceptors), and serves /metrics, /healthz, /readyz and, optionally,
// /debug/pprof/ over HTTP.
//
// Every node has its own prometheus.Registry; nothing is registered
// globally, so any number of nodes can live in one process.
package metrics

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/gate"
)

// namespace starts every metric name.
const namespace = "zcluster"

// maxMsgIDs bounds the distinct msg_id label values per metric: clients
// choose the msgIDs they send, and each value is a time series. Further
// msgIDs are counted under msg_id="other".
const maxMsgIDs = 256

// otherMsgID is the msg_id label of msgIDs beyond maxMsgIDs.
const otherMsgID = "other"

// Role says which series a node exposes: the gate-only ones (client
// connections, logins, kicks, client messages, error frames, sessions,
// pending requests), the backend-only ones (handled messages, handler
// time, queue depth), or both. The store, relay, registration and session
// directory series, and the Go runtime and process collectors, are common.
type Role int

// Roles.
const (
	RoleAll Role = iota // both: for tests and one-off tools
	RoleGate
	RoleBackend
)

func (r Role) gate() bool    { return r != RoleBackend }
func (r Role) backend() bool { return r != RoleGate }

// Metrics holds one node's metrics. Create it with NewGate or NewBackend
// (New has both roles' series), pass Gate() or Backend() as the node's
// Observer, RedisHook() to its Redis client and
// EtcdDialOptions() to its etcd client, then call SetGate or SetBackend once
// the node has started. Safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	connsOpened *prometheus.CounterVec
	conns       *prometheus.GaugeVec
	logins      prometheus.Counter
	kicks       prometheus.Counter
	msgIn       *counterCache[inKey]
	msgOut      *counterCache[uint32]
	errFrames   *counterCache[uint32]
	handled     *counterCache[handledKey]
	handlerDur  *prometheus.HistogramVec
	durChildren *observerCache

	redisDur *prometheus.HistogramVec
	etcdDur  *prometheus.HistogramVec

	status atomic.Pointer[statusSource]
}

// New returns the metrics of a node of either role (every series of
// both), registered in a fresh registry with the Go runtime and process
// collectors. constLabels (e.g. node and group) are added to every zcluster
// metric; nil adds none. A node knows its role: use NewGate or NewBackend,
// which do not expose series stuck at 0.
func New(constLabels prometheus.Labels) *Metrics { return NewRole(RoleAll, constLabels) }

// NewGate returns the metrics of a gate: the common series and the
// gate-only ones.
func NewGate(constLabels prometheus.Labels) *Metrics { return NewRole(RoleGate, constLabels) }

// NewBackend returns the metrics of a backend: the common series and the
// backend-only ones.
func NewBackend(constLabels prometheus.Labels) *Metrics {
	return NewRole(RoleBackend, constLabels)
}

// NewRole returns the metrics of a node of role (see New).
func NewRole(role Role, constLabels prometheus.Labels) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	opts := func(name, help string) prometheus.CounterOpts {
		return prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help, ConstLabels: constLabels}
	}
	m.connsOpened = prometheus.NewCounterVec(opts("client_connections_opened_total",
		"Client connections accepted by the gate, by transport (tcp, ws, kcp)."), []string{"transport"})
	m.conns = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "client_connections",
		Help: "Client connections open on the gate, by transport (tcp, ws, kcp).", ConstLabels: constLabels}, []string{"transport"})
	for _, tr := range []string{gate.TransportTCP, gate.TransportWS, gate.TransportKCP} {
		m.connsOpened.WithLabelValues(tr)
		m.conns.WithLabelValues(tr)
	}
	m.logins = prometheus.NewCounter(opts("logins_total", "Successful client logins on the gate."))
	m.kicks = prometheus.NewCounter(opts("kicks_total", "Client sessions closed by a kick (takeover by a newer login, or a backend's Kick)."))
	msgIn := prometheus.NewCounterVec(opts("messages_in_total",
		"Client frames received by the gate, by msgID and the group they were routed to (group=\"\" when they could not be routed)."),
		[]string{"msg_id", "group"})
	msgOut := prometheus.NewCounterVec(opts("messages_out_total", "Frames written to clients by the gate (replies, pushes, broadcasts), by msgID."),
		[]string{"msg_id"})
	errFrames := prometheus.NewCounterVec(opts("error_frames_total", "Error frames (msgID 65535) sent to clients, by the msgID they answer."),
		[]string{"msg_id"})
	handled := prometheus.NewCounterVec(opts("backend_messages_total",
		"Messages handled by the backend, by msgID, kind (message or call) and result (ok or error)."),
		[]string{"msg_id", "kind", "result"})
	m.handlerDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "backend_handler_seconds",
		Help: "How long backend handlers ran, by msgID.", ConstLabels: constLabels,
		Buckets: []float64{.0001, .0005, .001, .005, .01, .05, .1, .5, 1, 5}}, []string{"msg_id"})
	m.redisDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "redis_call_seconds",
		Help: "Latency of Redis calls, by command (\"pipeline\" for a pipeline) and result.", ConstLabels: constLabels,
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .5, 1}}, []string{"command", "result"})
	m.etcdDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "etcd_call_seconds",
		Help: "Latency of etcd gRPC calls (for streams: until the stream is open), by method and result.", ConstLabels: constLabels,
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5}}, []string{"method", "result"})

	m.msgIn = newCounterCache(msgIn, func(k inKey) []string { return []string{msgIDLabel(k.msgID), k.group} },
		func(k inKey) []string { return []string{otherMsgID, k.group} })
	m.msgOut = newCounterCache(msgOut, func(k uint32) []string { return []string{msgIDLabel(k)} },
		func(uint32) []string { return []string{otherMsgID} })
	m.errFrames = newCounterCache(errFrames, func(k uint32) []string { return []string{msgIDLabel(k)} },
		func(uint32) []string { return []string{otherMsgID} })
	m.handled = newCounterCache(handled, func(k handledKey) []string { return k.labels(msgIDLabel(k.msgID)) },
		func(k handledKey) []string { return k.labels(otherMsgID) })
	m.durChildren = &observerCache{vec: m.handlerDur}

	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.redisDur, m.etcdDur,
		&statusCollector{m: m, labels: constLabels, role: role},
	)
	if role.gate() {
		m.reg.MustRegister(m.connsOpened, m.conns, m.logins, m.kicks, msgIn, msgOut, errFrames)
	}
	if role.backend() {
		m.reg.MustRegister(handled, m.handlerDur)
	}
	return m
}

// Registry returns the node's registry, for serving or for more collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

func msgIDLabel(id uint32) string { return strconv.FormatUint(uint64(id), 10) }

type inKey struct {
	msgID uint32
	group string
}

type handledKey struct {
	msgID uint32
	call  bool
	err   bool
}

func (k handledKey) labels(msgID string) []string {
	kind, result := "message", "ok"
	if k.call {
		kind = "call"
	}
	if k.err {
		result = "error"
	}
	return []string{msgID, kind, result}
}

// counterCache maps a key to its counter child. Lookups read an immutable
// map through an atomic pointer, so the hot path takes no lock and does not
// allocate; a new key copies the map under mu. At most maxMsgIDs keys get
// their own child; later keys share the overflow child.
type counterCache[K comparable] struct {
	vec      *prometheus.CounterVec
	labels   func(K) []string
	overflow func(K) []string

	m  atomic.Pointer[map[K]prometheus.Counter]
	mu sync.Mutex
}

func newCounterCache[K comparable](vec *prometheus.CounterVec, labels, overflow func(K) []string) *counterCache[K] {
	c := &counterCache[K]{vec: vec, labels: labels, overflow: overflow}
	empty := map[K]prometheus.Counter{}
	c.m.Store(&empty)
	return c
}

func (c *counterCache[K]) get(k K) prometheus.Counter {
	if ctr, ok := (*c.m.Load())[k]; ok {
		return ctr
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.m.Load()
	if ctr, ok := old[k]; ok {
		return ctr
	}
	var ctr prometheus.Counter
	if len(old) < maxMsgIDs {
		ctr = c.vec.WithLabelValues(c.labels(k)...)
	} else {
		ctr = c.vec.WithLabelValues(c.overflow(k)...)
	}
	next := make(map[K]prometheus.Counter, len(old)+1)
	for kk, v := range old {
		next[kk] = v
	}
	next[k] = ctr
	c.m.Store(&next)
	return ctr
}

// observerCache is counterCache for the handler duration histogram.
type observerCache struct {
	vec *prometheus.HistogramVec
	m   atomic.Pointer[map[uint32]prometheus.Observer]
	mu  sync.Mutex
}

func (c *observerCache) get(id uint32) prometheus.Observer {
	if p := c.m.Load(); p != nil {
		if o, ok := (*p)[id]; ok {
			return o
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var old map[uint32]prometheus.Observer
	if p := c.m.Load(); p != nil {
		old = *p
		if o, ok := old[id]; ok {
			return o
		}
	}
	label := msgIDLabel(id)
	if len(old) >= maxMsgIDs {
		label = otherMsgID
	}
	o := c.vec.WithLabelValues(label)
	next := make(map[uint32]prometheus.Observer, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[id] = o
	c.m.Store(&next)
	return o
}

// Gate returns the gate.Observer that feeds these metrics.
func (m *Metrics) Gate() gate.Observer { return gateObserver{m} }

// Backend returns the backend.Observer that feeds these metrics.
func (m *Metrics) Backend() backend.Observer { return backendObserver{m} }

type gateObserver struct{ m *Metrics }

var _ gate.Observer = gateObserver{}

func (o gateObserver) ConnOpened(transport string) {
	o.m.connsOpened.WithLabelValues(transport).Inc()
	o.m.conns.WithLabelValues(transport).Inc()
}
func (o gateObserver) ConnClosed(transport string) { o.m.conns.WithLabelValues(transport).Dec() }
func (o gateObserver) LoggedIn()                   { o.m.logins.Inc() }
func (o gateObserver) Kicked()                     { o.m.kicks.Inc() }
func (o gateObserver) MessageIn(msgID uint32, group string) {
	o.m.msgIn.get(inKey{msgID, group}).Inc()
}
func (o gateObserver) MessageOut(msgID uint32) { o.m.msgOut.get(msgID).Inc() }
func (o gateObserver) ErrorFrame(msgID uint32) { o.m.errFrames.get(msgID).Inc() }

type backendObserver struct{ m *Metrics }

var _ backend.Observer = backendObserver{}

func (o backendObserver) Handled(msgID uint32, call bool, d time.Duration, err error) {
	o.m.handled.get(handledKey{msgID: msgID, call: call, err: err != nil}).Inc()
	o.m.durChildren.get(msgID).Observe(d.Seconds())
}
