package metrics

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zcluster/zcluster/inbox"
	"github.com/zcluster/zcluster/relay"
	"github.com/zcluster/zcluster/session"
)

// NodeStatus is what every started node reports about itself; *gate.Gate
// and *backend.Backend implement it. The methods are read at scrape time and
// must be safe for concurrent use.
type NodeStatus interface {
	Registered() bool
	Reregistrations() int64
	RelayStats() relay.Stats
	RelayPeers() []string
	SessionStats() session.Stats
}

// GateStatus is NodeStatus plus what only a gate knows.
type GateStatus interface {
	NodeStatus
	Sessions() int
	LoggedIn() int
	Pending() int
}

// BackendStatus is NodeStatus plus what only a backend knows.
type BackendStatus interface {
	NodeStatus
	Queued() int64
	Refused() int64
	InboxStats() inbox.Stats
}

type statusSource struct {
	node    NodeStatus
	gate    GateStatus
	backend BackendStatus
}

// SetGate makes the scrape report g's status. Call it once g has started:
// until then only the event counters are reported.
func (m *Metrics) SetGate(g GateStatus) { m.status.Store(&statusSource{node: g, gate: g}) }

// SetBackend makes the scrape report b's status. Call it once b has started.
func (m *Metrics) SetBackend(b BackendStatus) {
	m.status.Store(&statusSource{node: b, backend: b})
}

// statusCollector reads the node's accessors at scrape time.
type statusCollector struct {
	m      *Metrics
	labels prometheus.Labels
	role   Role
}

// gateOnly and backendOnly are the status series of one role.
var (
	gateOnly    = []string{"sessions", "logged_in", "pending"}
	backendOnly = []string{"queued", "busy", "inbox_appends", "inbox_failed", "inbox_busy", "inbox_pending", "inbox_redis_calls", "inbox_scripts"}
)

func (c *statusCollector) desc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, nil, c.labels)
}

// statusDescs lists every metric the collector may emit, by name.
func (c *statusCollector) descs() map[string]*prometheus.Desc {
	return map[string]*prometheus.Desc{
		"registered":          c.desc("registered", "1 while the node is registered in etcd, else 0."),
		"reregistrations":     c.desc("lease_reregistrations_total", "Times the node lost its etcd lease and registered again."),
		"relay_links":         c.desc("relay_links", "Live outbound relay links (one per peer this node sends to)."),
		"relay_sent":          c.desc("relay_envelopes_sent_total", "Envelopes queued on outbound relay links."),
		"relay_received":      c.desc("relay_envelopes_received_total", "Envelopes received on relay links."),
		"relay_bytes":         c.desc("relay_bytes_sent_total", "Bytes queued on outbound relay links."),
		"relay_links_up":      c.desc("relay_links_up_total", "Outbound relay links established."),
		"relay_links_down":    c.desc("relay_links_down_total", "Outbound relay links that broke."),
		"relay_dial_failures": c.desc("relay_dial_failures_total", "Outbound relay dials or handshakes that failed."),
		"relay_hs_failures":   c.desc("relay_handshake_failures_total", "Inbound relay connections refused before authenticating."),
		"relay_refused":       c.desc("relay_refused_total", "Authenticated inbound relay links closed for a malformed envelope."),
		"session_lookups":     c.desc("session_lookups_total", "Session directory lookups."),
		"session_cache_hits":  c.desc("session_cache_hits_total", "Session directory lookups answered from the local cache."),
		"session_redis_calls": c.desc("session_redis_calls_total", "Round trips the session directory made to Redis."),
		"sessions":            c.desc("sessions", "Client sessions (connections) on the gate."),
		"logged_in":           c.desc("sessions_logged_in", "Logged-in client sessions on the gate."),
		"pending":             c.desc("pending_requests", "Requests the gate forwarded to a backend and awaits an answer for (queue depth)."),
		"queued":              c.desc("backend_queued", "Messages the backend holds: queued or being handled (queue depth)."),
		"busy":                c.desc("backend_busy_total", "Messages and Calls the backend answered busy: a session's queue, the node's queued bytes or its Calls at their limit."),
		"inbox_appends":       c.desc("inbox_appends_total", "Reliable messages the backend stored in users' inboxes."),
		"inbox_failed":        c.desc("inbox_append_failures_total", "Reliable appends that got an error from Redis (the sender was told the message was not stored)."),
		"inbox_busy":          c.desc("inbox_busy_total", "Reliable appends refused at once because too many were waiting for Redis."),
		"inbox_pending":       c.desc("inbox_pending_bytes", "Bytes of reliable appends accepted and waiting for Redis (refused past 64 MiB)."),
		"inbox_redis_calls":   c.desc("inbox_redis_calls_total", "Pipelines the backend sent to Redis for reliable appends."),
		"inbox_scripts":       c.desc("inbox_append_scripts_total", "Append scripts run (one per user per pipeline)."),
	}
}

// Describe implements prometheus.Collector: the series of the role.
func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for name, d := range c.descs() {
		if (!c.role.gate() && slices.Contains(gateOnly, name)) || (!c.role.backend() && slices.Contains(backendOnly, name)) {
			continue
		}
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	src := c.m.status.Load()
	if src == nil {
		return
	}
	d := c.descs()
	gauge := func(name string, v float64) {
		ch <- prometheus.MustNewConstMetric(d[name], prometheus.GaugeValue, v)
	}
	counter := func(name string, v float64) {
		ch <- prometheus.MustNewConstMetric(d[name], prometheus.CounterValue, v)
	}
	n := src.node
	reg := 0.0
	if n.Registered() {
		reg = 1
	}
	gauge("registered", reg)
	counter("reregistrations", float64(n.Reregistrations()))
	gauge("relay_links", float64(len(n.RelayPeers())))
	rs := n.RelayStats()
	counter("relay_sent", float64(rs.EnvelopesSent))
	counter("relay_received", float64(rs.EnvelopesReceived))
	counter("relay_bytes", float64(rs.BytesSent))
	counter("relay_links_up", float64(rs.LinksUp))
	counter("relay_links_down", float64(rs.LinksDown))
	counter("relay_dial_failures", float64(rs.DialFailures))
	counter("relay_hs_failures", float64(rs.HandshakeFailures))
	counter("relay_refused", float64(rs.Refused))
	ss := n.SessionStats()
	counter("session_lookups", float64(ss.Lookups))
	counter("session_cache_hits", float64(ss.CacheHits))
	counter("session_redis_calls", float64(ss.RedisCalls))
	if g := src.gate; g != nil && c.role.gate() {
		gauge("sessions", float64(g.Sessions()))
		gauge("logged_in", float64(g.LoggedIn()))
		gauge("pending", float64(g.Pending()))
	}
	if b := src.backend; b != nil && c.role.backend() {
		gauge("queued", float64(b.Queued()))
		counter("busy", float64(b.Refused()))
		is := b.InboxStats()
		counter("inbox_appends", float64(is.Appends))
		counter("inbox_failed", float64(is.Failed))
		counter("inbox_busy", float64(is.Busy))
		gauge("inbox_pending", float64(is.PendingBytes))
		counter("inbox_redis_calls", float64(is.RedisCalls))
		counter("inbox_scripts", float64(is.Scripts))
	}
}
