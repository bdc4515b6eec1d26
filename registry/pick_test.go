package registry

import (
	"fmt"
	"hash/fnv"
	"log/slog"
	"testing"
)

// staticTopology is a Topology showing nodes, without etcd.
func staticTopology(nodes ...Node) *Topology {
	t := &Topology{cfg: Config{}.withDefaults(), st: newState()}
	for i, n := range nodes {
		key := t.cfg.nodeKey(n.Group, n.ID)
		t.st.nodes[key] = nodeRec{node: n, raw: []byte(n.ID), createRev: int64(i + 1)}
	}
	t.view.Store(t.st.build(slog.New(slog.DiscardHandler)))
	return t
}

func groupOf(n int) []Node {
	nodes := make([]Node, n)
	for i := range nodes {
		nodes[i] = testNode(fmt.Sprintf("im-%d", i+1), "im")
	}
	return nodes
}

func owners(t *Topology, keys int) map[string]string {
	m := make(map[string]string, keys)
	for i := range keys {
		k := fmt.Sprintf("user-%d", i)
		n, ok := t.Pick("im", k)
		if !ok {
			panic("no node")
		}
		m[k] = n.ID
	}
	return m
}

func TestPick(t *testing.T) {
	const keys = 10000
	four := staticTopology(groupOf(4)...)

	if _, ok := four.Pick("echo", "alice"); ok {
		t.Fatal("picked from an empty group")
	}
	// Stable, and the same in another process (a fresh view of the same nodes,
	// built in another order).
	a, _ := four.Pick("im", "alice")
	for range 10 {
		if b, _ := four.Pick("im", "alice"); b.ID != a.ID {
			t.Fatalf("Pick not stable: %s then %s", a.ID, b.ID)
		}
	}
	nodes := groupOf(4)
	other := staticTopology(nodes[3], nodes[1], nodes[0], nodes[2])
	base := owners(four, keys)
	for k, id := range owners(other, keys) {
		if base[k] != id {
			t.Fatalf("key %s: %s vs %s across views", k, base[k], id)
		}
	}
	// The hashes are the standard ones, so any implementation agrees.
	for _, k := range []string{"", "alice", "session-0123456789abcdef"} {
		h := fnv.New64a()
		h.Write([]byte(k))
		if fnv1a64(k) != h.Sum64() {
			t.Fatalf("fnv1a64(%q) = %x, want %x", k, fnv1a64(k), h.Sum64())
		}
	}
	if got := mix64(0x9e3779b97f4a7c15); got != 0xe220a8397b1dcdaf { // splitmix64's first output for seed 0
		t.Fatalf("mix64 = %x", got)
	}
	if a.ID != "im-1" { // pinned: a change here re-homes every key in a running cluster
		t.Fatalf("alice -> %s, want im-1", a.ID)
	}

	// Even spread: each of 4 nodes gets 25% +- 3%.
	count := map[string]int{}
	for _, id := range base {
		count[id]++
	}
	for id, c := range count {
		if c < keys*22/100 || c > keys*28/100 {
			t.Errorf("node %s owns %d of %d keys", id, c, keys)
		}
	}
	if len(count) != 4 {
		t.Fatalf("keys spread over %d nodes", len(count))
	}

	// Removing im-2 moves only the keys it owned.
	three := staticTopology(nodes[0], nodes[2], nodes[3])
	for k, id := range owners(three, keys) {
		if base[k] != "im-2" && base[k] != id {
			t.Fatalf("key %s moved from %s to %s though im-2 left", k, base[k], id)
		}
		if id == "im-2" {
			t.Fatalf("key %s still on removed im-2", k)
		}
	}

	// Adding im-5 moves about 1/5 of the keys, all to im-5.
	five := staticTopology(groupOf(5)...)
	moved := 0
	for k, id := range owners(five, keys) {
		if id != base[k] {
			if id != "im-5" {
				t.Fatalf("key %s moved from %s to %s, not to the new node", k, base[k], id)
			}
			moved++
		}
	}
	if moved < keys*17/100 || moved > keys*23/100 {
		t.Errorf("adding a 5th node moved %d of %d keys, want about 1/5", moved, keys)
	}
}

func TestRouteConflictInView(t *testing.T) {
	top := staticTopology()
	st := &top.st
	st.routes["/zcluster/routes/3/echo-1"] = routeRec{route: Route{MsgID: 3, Group: "echo"}, nodeID: "echo-1", createRev: 9}
	st.routes["/zcluster/routes/3/im-1"] = routeRec{route: Route{MsgID: 3, Group: "im"}, nodeID: "im-1", createRev: 5}
	st.routes["/zcluster/routes/3/im-2"] = routeRec{route: Route{MsgID: 3, Group: "im"}, nodeID: "im-2", createRev: 7}
	top.view.Store(st.build(slog.New(slog.DiscardHandler)))
	if r, ok := top.Route(3); !ok || r.Group != "im" {
		t.Fatalf("Route(3) = %+v %v, want the oldest claim (im)", r, ok)
	}
	if st.warned[3] == "" {
		t.Fatal("conflict not noted")
	}
}

func TestPickAllocs(t *testing.T) {
	top := staticTopology(groupOf(8)...)
	allocs := testing.AllocsPerRun(1000, func() {
		if _, ok := top.Pick("im", "user-42"); !ok {
			t.Fatal("no node")
		}
		top.Route(3)
		top.Node("im-3")
	})
	if allocs != 0 {
		t.Fatalf("Pick/Route/Node allocate %v times per call", allocs)
	}
}

func BenchmarkPick(b *testing.B) {
	top := staticTopology(groupOf(8)...)
	b.ReportAllocs()
	for b.Loop() {
		top.Pick("im", "session-0123456789abcdef")
	}
}
