// Package topview reads a zcluster's state straight from etcd and Redis,
// with no node involved, and formats it for `zcluster top` and
// `zcluster routes`: every registered node with its routes, lease TTL left,
// version and uptime, the number of sessions each gate owns in Redis, and
// the msgID -> group -> nodes routing table.
package topview

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/zcluster/zcluster/registry"
	"github.com/zcluster/zcluster/session"
)

// scanCount is the COUNT hint of each SCAN call; getBatch the number of GETs
// pipelined at once.
const (
	scanCount = 1000
	getBatch  = 500
)

// ErrRead is returned when etcd or Redis cannot be read.
var ErrRead = errors.New("topview: read")

// Source says where the cluster's state lives.
type Source struct {
	Etcd  *clientv3.Client
	Redis redis.UniversalClient // nil: sessions are not counted
	// Prefix is the etcd key prefix (default "/zcluster").
	Prefix string
	// SessionPrefix starts the Redis keys (default "zc:").
	SessionPrefix string
}

// Node is one registered node as `zcluster top` shows it.
type Node struct {
	Group      string           `json:"group"`
	ID         string           `json:"id"`
	Kind       string           `json:"kind"`
	RelayAddr  string           `json:"relay_addr"`
	ClientAddr string           `json:"client_addr,omitempty"`
	Routes     []registry.Route `json:"routes"`
	// Sessions is the number of sessions the gate owns in Redis (gates
	// only; nil for backends or when Redis was not read).
	Sessions *int `json:"sessions,omitempty"`
	// Conns is the gate's open client connections by transport ("tcp",
	// "ws", "kcp"), as it last published them (every few seconds when
	// they change); nil for backends or when not known.
	Conns map[string]int `json:"conns,omitempty"`
	// LeaseTTL is the seconds left on the node's etcd lease (-1: unknown).
	LeaseTTL  int64     `json:"lease_ttl_seconds"`
	LeaseID   string    `json:"lease_id"`
	Version   string    `json:"version"`
	StartedAt time.Time `json:"started_at"`
	// Uptime is Time - StartedAt, in whole seconds.
	Uptime int64 `json:"uptime_seconds"`
}

// RouteGroup is the nodes of one group that serve a msgID.
type RouteGroup struct {
	Group string   `json:"group"`
	Name  string   `json:"name"`
	Nodes []string `json:"nodes"`
}

// Route is one msgID and who serves it. More than one group means a
// conflict: gates refuse to route such a msgID. Down is a route remembered
// after the last node of its group left (registry.Config.RouteMemory): its
// one group has no nodes, and gates answer "no live node for group".
type Route struct {
	MsgID  uint32       `json:"msg_id"`
	Groups []RouteGroup `json:"groups"`
	Down   bool         `json:"down,omitempty"`
}

// Snapshot is the cluster at one moment.
type Snapshot struct {
	Time  time.Time `json:"time"`
	Nodes []Node    `json:"nodes"`
	// Routes are sorted by msgID.
	Routes []Route `json:"routes"`
	// Sessions is the number of session records in Redis (-1: not read).
	Sessions int `json:"sessions"`
	// Orphans counts session records whose gate is not registered (they
	// expire within the session TTL).
	Orphans int `json:"orphan_sessions"`
}

// Read takes a snapshot of the cluster.
func Read(ctx context.Context, src Source) (*Snapshot, error) {
	prefix := cmp.Or(src.Prefix, registry.DefaultPrefix)
	snap := &Snapshot{Time: time.Now(), Nodes: []Node{}, Sessions: -1}

	resp, err := src.Etcd.Get(ctx, prefix+"/nodes/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("%w: etcd nodes: %w", ErrRead, err)
	}
	ttls := map[clientv3.LeaseID]int64{}
	for _, kv := range resp.Kvs {
		var n registry.Node
		if err := json.Unmarshal(kv.Value, &n); err != nil {
			continue // not ours to judge; the registry logs bad records
		}
		rest := strings.TrimPrefix(string(kv.Key), prefix+"/nodes/")
		if g, id, ok := strings.Cut(rest, "/"); ok {
			n.Group, n.ID = cmp.Or(n.Group, g), cmp.Or(n.ID, id)
		}
		lease := clientv3.LeaseID(kv.Lease)
		ttl, seen := ttls[lease]
		if !seen {
			ttl = -1
			if lease != clientv3.NoLease {
				if lr, err := src.Etcd.TimeToLive(ctx, lease); err == nil {
					ttl = lr.TTL
				}
			}
			ttls[lease] = ttl
		}
		up := int64(0)
		if !n.StartedAt.IsZero() {
			up = max(0, int64(snap.Time.Sub(n.StartedAt)/time.Second))
		}
		snap.Nodes = append(snap.Nodes, Node{
			Group: n.Group, ID: n.ID, Kind: n.Kind, RelayAddr: n.RelayAddr, ClientAddr: n.ClientAddr,
			Routes: n.Routes, LeaseTTL: ttl, LeaseID: strconv.FormatInt(int64(lease), 16),
			Version: n.Version, StartedAt: n.StartedAt, Uptime: up,
		})
	}
	slices.SortFunc(snap.Nodes, func(a, b Node) int {
		return cmp.Or(cmp.Compare(kindOrder(a.Kind), kindOrder(b.Kind)), cmp.Compare(a.Group, b.Group), cmp.Compare(a.ID, b.ID))
	})

	if snap.Routes, err = readRoutes(ctx, src.Etcd, prefix); err != nil {
		return nil, err
	}
	if snap.Routes, err = addDownRoutes(ctx, src.Etcd, prefix, snap.Routes, snap.Nodes); err != nil {
		return nil, err
	}

	if src.Redis != nil {
		byGate, total, err := countSessions(ctx, src.Redis, cmp.Or(src.SessionPrefix, session.DefaultPrefix))
		if err != nil {
			return nil, err
		}
		snap.Sessions, snap.Orphans = total, total
		for i := range snap.Nodes {
			n := &snap.Nodes[i]
			if n.Kind != registry.KindGate {
				continue
			}
			c := byGate[n.ID]
			n.Sessions = &c
			snap.Orphans -= c
			conns, err := session.ReadConns(ctx, src.Redis, cmp.Or(src.SessionPrefix, session.DefaultPrefix), n.ID)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrRead, err)
			}
			n.Conns = conns
		}
	}
	return snap, nil
}

func kindOrder(kind string) int {
	if kind == registry.KindGate {
		return 0
	}
	return 1
}

// addDownRoutes adds to routes the remembered routes
// (<prefix>/known/<msgID>/<nodeID>) of msgIDs no live node serves and whose
// group has no live node, marked Down, as the gates' registry view has them.
func addDownRoutes(ctx context.Context, cli *clientv3.Client, prefix string, routes []Route, nodes []Node) ([]Route, error) {
	resp, err := cli.Get(ctx, prefix+"/known/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("%w: etcd known routes: %w", ErrRead, err)
	}
	live := map[uint32]bool{}
	for _, r := range routes {
		live[r.MsgID] = true
	}
	type memory struct {
		rev   int64
		group RouteGroup
	}
	latest := map[uint32]memory{}
	for _, kv := range resp.Kvs {
		rest := strings.TrimPrefix(string(kv.Key), prefix+"/known/")
		idStr, _, ok := strings.Cut(rest, "/")
		id, err := strconv.ParseUint(idStr, 10, 32)
		if !ok || err != nil || live[uint32(id)] {
			continue
		}
		var v RouteGroup
		if err := json.Unmarshal(kv.Value, &v); err != nil || v.Group == "" {
			continue
		}
		if slices.ContainsFunc(nodes, func(n Node) bool { return n.Group == v.Group }) {
			continue
		}
		if m, seen := latest[uint32(id)]; seen && m.rev >= kv.ModRevision {
			continue
		}
		latest[uint32(id)] = memory{rev: kv.ModRevision, group: RouteGroup{Group: v.Group, Name: v.Name, Nodes: []string{}}}
	}
	for id, m := range latest {
		routes = append(routes, Route{MsgID: id, Groups: []RouteGroup{m.group}, Down: true})
	}
	slices.SortFunc(routes, func(a, b Route) int { return cmp.Compare(a.MsgID, b.MsgID) })
	return routes, nil
}

// readRoutes reads <prefix>/routes/<msgID>/<nodeID> into msgID -> group ->
// nodes.
func readRoutes(ctx context.Context, cli *clientv3.Client, prefix string) ([]Route, error) {
	resp, err := cli.Get(ctx, prefix+"/routes/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("%w: etcd routes: %w", ErrRead, err)
	}
	type value struct {
		Group string `json:"group"`
		Name  string `json:"name"`
	}
	byID := map[uint32]*Route{}
	for _, kv := range resp.Kvs {
		rest := strings.TrimPrefix(string(kv.Key), prefix+"/routes/")
		idStr, node, ok := strings.Cut(rest, "/")
		id, err := strconv.ParseUint(idStr, 10, 32)
		if !ok || err != nil || node == "" {
			continue
		}
		var v value
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			continue
		}
		r := byID[uint32(id)]
		if r == nil {
			r = &Route{MsgID: uint32(id)}
			byID[uint32(id)] = r
		}
		i := slices.IndexFunc(r.Groups, func(g RouteGroup) bool { return g.Group == v.Group })
		if i < 0 {
			r.Groups = append(r.Groups, RouteGroup{Group: v.Group, Name: v.Name})
			i = len(r.Groups) - 1
		}
		r.Groups[i].Nodes = append(r.Groups[i].Nodes, node)
	}
	out := make([]Route, 0, len(byID))
	for _, r := range byID {
		slices.SortFunc(r.Groups, func(a, b RouteGroup) int { return cmp.Compare(a.Group, b.Group) })
		for i := range r.Groups {
			slices.Sort(r.Groups[i].Nodes)
		}
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b Route) int { return cmp.Compare(a.MsgID, b.MsgID) })
	return out, nil
}

// countSessions counts the session records "<prefix>s:<sid>" by owning gate
// (their values are "<gate>|<token>"). On a Redis Cluster it scans every
// master.
func countSessions(ctx context.Context, rdb redis.UniversalClient, prefix string) (map[string]int, int, error) {
	var (
		mu     sync.Mutex
		byGate = map[string]int{}
		total  int
	)
	add := func(local map[string]int) {
		mu.Lock()
		defer mu.Unlock()
		for g, n := range local {
			byGate[g] += n
			total += n
		}
	}
	var err error
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			local, err := scanSessions(ctx, m, prefix)
			add(local)
			return err
		})
	} else {
		var local map[string]int
		local, err = scanSessions(ctx, rdb, prefix)
		add(local)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%w: redis sessions: %w", ErrRead, err)
	}
	return byGate, total, nil
}

// scanSessions counts the session records of one Redis server by gate.
func scanSessions(ctx context.Context, c redis.Cmdable, prefix string) (map[string]int, error) {
	byGate := map[string]int{}
	var cursor uint64
	for {
		keys, next, err := c.Scan(ctx, cursor, prefix+"s:*", scanCount).Result()
		if err != nil {
			return byGate, err
		}
		for len(keys) > 0 {
			batch := keys[:min(len(keys), getBatch)]
			keys = keys[len(batch):]
			cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, k := range batch {
					p.Get(ctx, k)
				}
				return nil
			})
			if err != nil && !errors.Is(err, redis.Nil) {
				return byGate, err
			}
			for _, cmd := range cmds {
				v, err := cmd.(*redis.StringCmd).Result()
				if err != nil {
					continue // expired between SCAN and GET
				}
				gate, _, _ := strings.Cut(v, "|")
				byGate[gate]++
			}
		}
		if cursor = next; cursor == 0 {
			return byGate, nil
		}
	}
}
