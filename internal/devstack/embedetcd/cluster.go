package embedetcd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap/zapcore"

	"github.com/zcluster/zcluster/internal/runtime/freeport"
)

// ErrNoLeader is returned (wrapped) by WaitLeader when no running member
// leads the cluster before its context ends.
var ErrNoLeader = errors.New("embedetcd: no leader")

// ErrMemberIndex is returned (wrapped) for a member index out of range.
var ErrMemberIndex = errors.New("embedetcd: no such member")

// Cluster is an n-member etcd cluster running inside this process, every
// member on its own loopback client and peer ports with its own data dir.
// It is for tests that need a real quorum: leader elections, a member that
// dies. Its methods are safe for concurrent use.
type Cluster struct {
	token   string
	initial string // name=peerURL,... for every member
	members []*member
}

// member is one etcd member of a Cluster.
type member struct {
	name      string
	dir       string
	clientURL url.URL
	peerURL   url.URL

	// life serialises starting and stopping; mu guards the fields below
	// and is never held while etcd starts or stops, so Leader and Running
	// answer while a member is being stopped.
	life     sync.Mutex
	mu       sync.Mutex
	etcd     *embed.Etcd // nil while stopped
	started  bool        // has been started once: restarts join the existing cluster
	closed   bool
	stopping atomic.Bool
}

// StartCluster starts an n-member etcd cluster (n >= 1) on 127.0.0.1 with
// free ports, the data of member i in dir/m<i>, and waits until every member
// is ready and the cluster has a leader; ctx bounds the wait. Like Start, it
// logs errors only and disables fsync. The caller owns dir.
func StartCluster(ctx context.Context, dir string, n int) (*Cluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("embedetcd: cluster of %d members", n)
	}
	c := &Cluster{token: fmt.Sprintf("zc-%d", time.Now().UnixNano())}
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	var initial []string
	for i := range n {
		cport, pport := ports[2*i], ports[2*i+1]
		m := &member{
			name:      fmt.Sprintf("m%d", i),
			dir:       filepath.Join(dir, fmt.Sprintf("m%d", i)),
			clientURL: url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", cport)},
			peerURL:   url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", pport)},
		}
		if err := os.MkdirAll(m.dir, 0o700); err != nil {
			return nil, fmt.Errorf("embedetcd: data dir: %w", err)
		}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peerURL.String())
	}
	c.initial = strings.Join(initial, ",")

	// Every member must be started before any can become ready: readiness
	// needs a quorum.
	for _, m := range c.members {
		if err := c.startMember(m); err != nil {
			c.Close()
			return nil, err
		}
	}
	for _, m := range c.members {
		if err := m.waitReady(ctx); err != nil {
			c.Close()
			return nil, err
		}
	}
	if _, err := c.WaitLeader(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Size returns the number of members, running or not.
func (c *Cluster) Size() int { return len(c.members) }

// Endpoints returns the client URLs of every member, running or not, in
// member order. Give all of them to a client so that it survives the loss of
// any minority of members.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, len(c.members))
	for i, m := range c.members {
		eps[i] = m.clientURL.String()
	}
	return eps
}

// MemberEndpoint returns the client URL of member i, 0 <= i < Size().
func (c *Cluster) MemberEndpoint(i int) string { return c.members[i].clientURL.String() }

// Running reports whether member i is running.
func (c *Cluster) Running(i int) bool {
	if i < 0 || i >= len(c.members) {
		return false
	}
	m := c.members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.etcd != nil
}

// Leader returns the index of the running member that is the leader right
// now, or -1 if none is (an election is under way, or no quorum).
func (c *Cluster) Leader() int {
	for i, m := range c.members {
		m.mu.Lock()
		e := m.etcd
		m.mu.Unlock()
		if e == nil {
			continue
		}
		if e.Server.Leader() == e.Server.MemberID() {
			return i
		}
	}
	return -1
}

// WaitLeader waits until a running member is the leader and returns its
// index. The error wraps ErrNoLeader if ctx ends first.
func (c *Cluster) WaitLeader(ctx context.Context) (int, error) {
	for {
		if i := c.Leader(); i >= 0 {
			return i, nil
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("%w: %w", ErrNoLeader, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// StopMember stops member i the way a crash would: its raft node halts at
// once, with no leadership transfer, then its listeners close (client
// streams to it break within a few seconds). Its data stays for
// RestartMember. Stopping a stopped member does nothing.
func (c *Cluster) StopMember(i int) error {
	if i < 0 || i >= len(c.members) {
		return fmt.Errorf("%w: %d of %d", ErrMemberIndex, i, len(c.members))
	}
	c.members[i].stop()
	return nil
}

// RestartMember starts a stopped member i again on its ports and data dir;
// it rejoins the cluster. It waits until the member is ready (ctx bounds the
// wait). It fails with ErrClosed after Close.
func (c *Cluster) RestartMember(ctx context.Context, i int) error {
	if i < 0 || i >= len(c.members) {
		return fmt.Errorf("%w: %d of %d", ErrMemberIndex, i, len(c.members))
	}
	m := c.members[i]
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	running := m.etcd != nil
	m.mu.Unlock()
	if !running {
		if err := c.startMember(m); err != nil {
			return err
		}
	}
	return m.waitReady(ctx)
}

// Close stops every member for good; it is safe to call twice. The data
// dirs are left in place.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for _, m := range c.members {
		wg.Go(func() {
			m.mu.Lock()
			m.closed = true
			m.mu.Unlock()
			m.stop()
		})
	}
	wg.Wait()
}

// startMember starts m without waiting for it to be ready.
func (c *Cluster) startMember(m *member) error {
	m.life.Lock()
	defer m.life.Unlock()
	m.mu.Lock()
	closed, running, restart := m.closed, m.etcd != nil, m.started
	m.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if running {
		return nil
	}
	cfg := embed.NewConfig()
	cfg.Name = m.name
	cfg.Dir = m.dir
	cfg.ListenClientUrls = []url.URL{m.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{m.clientURL}
	cfg.ListenPeerUrls = []url.URL{m.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{m.peerURL}
	cfg.InitialCluster = c.initial
	cfg.InitialClusterToken = c.token
	cfg.ClusterState = embed.ClusterStateFlagNew
	if restart {
		cfg.ClusterState = embed.ClusterStateFlagExisting
	}
	m.stopping.Store(false)
	tune(cfg, &m.stopping)

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("embedetcd: start member %s: %w", m.name, err)
	}
	m.mu.Lock()
	m.etcd = e
	m.started = true
	m.mu.Unlock()
	return nil
}

// waitReady waits until m serves clients.
func (m *member) waitReady(ctx context.Context) error {
	m.mu.Lock()
	e := m.etcd
	m.mu.Unlock()
	if e == nil {
		return fmt.Errorf("embedetcd: member %s is not running", m.name)
	}
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err := <-e.Err():
		m.stop()
		return fmt.Errorf("embedetcd: member %s: %w", m.name, err)
	case <-ctx.Done():
		return fmt.Errorf("embedetcd: member %s not ready: %w", m.name, ctx.Err())
	}
}

// stop halts m's raft node at once (as a crash would), then closes it.
// The member counts as stopped from the start.
func (m *member) stop() {
	m.life.Lock()
	defer m.life.Unlock()
	m.mu.Lock()
	e := m.etcd
	m.etcd = nil
	m.mu.Unlock()
	if e == nil {
		return
	}
	m.stopping.Store(true)
	e.Server.HardStop()
	e.Close()
}

// freePorts returns n distinct loopback ports that were free a moment ago,
// outside the ephemeral range (internal/runtime/freeport).
func freePorts(n int) ([]string, error) {
	ports, err := freeport.PickN("127.0.0.1", n)
	if err != nil {
		return nil, fmt.Errorf("embedetcd: free ports: %w", err)
	}
	out := make([]string, n)
	for i, p := range ports {
		out[i] = strconv.Itoa(p)
	}
	return out, nil
}

// benignErrors are error lines a healthy new cluster logs while it forms.
var benignErrors = map[string]bool{
	"failed to update storage version": true, // before the first snapshot
}

// benignFilter drops benignErrors.
type benignFilter struct{ zapcore.Core }

func (f *benignFilter) With(fields []zapcore.Field) zapcore.Core {
	return &benignFilter{f.Core.With(fields)}
}

func (f *benignFilter) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if benignErrors[e.Message] {
		return ce
	}
	return f.Core.Check(e, ce)
}
