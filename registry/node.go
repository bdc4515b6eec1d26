package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Node kinds and the group handled inside gates.
const (
	KindGate    = "gate"
	KindBackend = "backend"
	GateGroup   = "gate" // routes of this group are handled inside every gate
)

// maxRoutes keeps a registration within etcd's default --max-txn-ops (128):
// one put per route plus the node key.
const maxRoutes = 127

// Route is one msgID a node serves.
type Route struct {
	MsgID     uint32 `json:"msg_id"`
	Group     string `json:"group"`
	Name      string `json:"name"`
	Anonymous bool   `json:"anonymous,omitempty"` // usable before login
}

// routeValue is the JSON stored under a route key (the msgID and the node
// are in the key).
type routeValue struct {
	Group     string `json:"group"`
	Name      string `json:"name"`
	Anonymous bool   `json:"anonymous,omitempty"`
}

// Node is what a node publishes about itself.
type Node struct {
	ID         string    `json:"id"`
	Group      string    `json:"group"`
	Kind       string    `json:"kind"`
	RelayAddr  string    `json:"relay_addr"`
	ClientAddr string    `json:"client_addr,omitempty"`
	Routes     []Route   `json:"routes"`
	Version    string    `json:"version"`
	StartedAt  time.Time `json:"started_at"`
}

// normalize validates n and returns a copy with route groups filled in and
// routes sorted by msgID.
func normalize(n Node) (Node, error) {
	if err := checkName("id", n.ID); err != nil {
		return Node{}, err
	}
	if err := checkName("group", n.Group); err != nil {
		return Node{}, err
	}
	if n.Kind != KindGate && n.Kind != KindBackend {
		return Node{}, fmt.Errorf("%w: node %s: kind %q is neither %q nor %q", ErrInvalidNode, n.ID, n.Kind, KindGate, KindBackend)
	}
	if err := checkDialable(n.RelayAddr); err != nil {
		return Node{}, fmt.Errorf("%w: node %s: relay address: %w", ErrInvalidNode, n.ID, err)
	}
	if n.ClientAddr != "" {
		if err := checkDialable(n.ClientAddr); err != nil {
			return Node{}, fmt.Errorf("%w: node %s: client address: %w", ErrInvalidNode, n.ID, err)
		}
	}
	if len(n.Routes) > maxRoutes {
		return Node{}, fmt.Errorf("%w: node %s: %d routes, at most %d", ErrInvalidNode, n.ID, len(n.Routes), maxRoutes)
	}
	routes := slices.Clone(n.Routes)
	for i := range routes {
		r := &routes[i]
		if r.Group == "" {
			r.Group = n.Group
		}
		if r.Group != n.Group {
			return Node{}, fmt.Errorf("%w: node %s of group %q cannot publish msgID %d for group %q", ErrInvalidNode, n.ID, n.Group, r.MsgID, r.Group)
		}
	}
	slices.SortFunc(routes, func(a, b Route) int { return cmpUint32(a.MsgID, b.MsgID) })
	for i := 1; i < len(routes); i++ {
		if routes[i].MsgID == routes[i-1].MsgID {
			return Node{}, fmt.Errorf("%w: node %s: msgID %d listed twice", ErrInvalidNode, n.ID, routes[i].MsgID)
		}
	}
	if routes == nil {
		routes = []Route{}
	}
	n.Routes = routes
	return n, nil
}

func cmpUint32(a, b uint32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// checkName accepts a non-empty key segment without '/'.
func checkName(what, s string) error {
	if s == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalidNode, what)
	}
	if strings.Contains(s, "/") {
		return fmt.Errorf("%w: %s %q contains '/'", ErrInvalidNode, what, s)
	}
	return nil
}

// checkDialable accepts host:port where another machine can dial host: not
// empty and not a wildcard such as 0.0.0.0 or ::.
func checkDialable(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: %w", addr, err)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", addr)
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		return fmt.Errorf("%q is a wildcard address, not one others can dial", addr)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("%q has no valid port", addr)
	}
	return nil
}

// parseNodeKey splits "<group>/<id>" (the part after "<prefix>/nodes/").
func parseNodeKey(rest string) (group, id string, ok bool) {
	group, id, ok = strings.Cut(rest, "/")
	if !ok || group == "" || id == "" || strings.Contains(id, "/") {
		return "", "", false
	}
	return group, id, true
}

// parseRouteKey splits "<msgID>/<nodeID>" (the part after "<prefix>/routes/").
func parseRouteKey(rest string) (msgID uint32, nodeID string, ok bool) {
	m, nodeID, ok := strings.Cut(rest, "/")
	if !ok || nodeID == "" || strings.Contains(nodeID, "/") {
		return 0, "", false
	}
	v, err := strconv.ParseUint(m, 10, 32)
	if err != nil {
		return 0, "", false
	}
	return uint32(v), nodeID, true
}

// decodeNode parses a node value and checks it against its key.
func decodeNode(group, id string, value []byte) (Node, error) {
	var n Node
	if err := json.Unmarshal(value, &n); err != nil {
		return Node{}, err
	}
	if n.ID != id || n.Group != group {
		return Node{}, fmt.Errorf("value names node %q of group %q", n.ID, n.Group)
	}
	return n, nil
}

// decodeRoute parses a route value.
func decodeRoute(msgID uint32, value []byte) (Route, error) {
	var v routeValue
	if err := json.Unmarshal(value, &v); err != nil {
		return Route{}, err
	}
	if v.Group == "" {
		return Route{}, errors.New("route value without group")
	}
	return Route{MsgID: msgID, Group: v.Group, Name: v.Name, Anonymous: v.Anonymous}, nil
}

func jsonString(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

func encodeRoute(r Route) string {
	b, _ := json.Marshal(routeValue{Group: r.Group, Name: r.Name, Anonymous: r.Anonymous})
	return string(b)
}
