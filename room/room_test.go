package room_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/zcluster/zcluster/internal/testonly/testkit"
	"github.com/zcluster/zcluster/room"
)

func TestJoinLeavePurge(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testkit.Redis(t)})
	defer rdb.Close()
	s := room.New(rdb, "t:")
	ctx := context.Background()
	must := func(ok bool, err error) bool {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !must(s.Join(ctx, "r", "s1", "g1")) || !must(s.Join(ctx, "r", "s2", "g1")) || !must(s.Join(ctx, "r", "s3", "g2")) {
		t.Fatal("first joins not reported new")
	}
	if must(s.Join(ctx, "r", "s3", "g2")) {
		t.Fatal("a second join reported new")
	}
	gates, err := s.Gates(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, g := range gates {
		got[g.Gate] = g.Members
	}
	if len(got) != 2 || got["g1"] != 2 || got["g2"] != 1 {
		t.Fatalf("gates = %v, want g1:2 g2:1", got)
	}
	if !must(s.Leave(ctx, "r", "s1")) || must(s.Leave(ctx, "r", "s1")) {
		t.Fatal("leave reported wrong")
	}
	// g2 dies: its members go, g1's stay.
	if n, err := s.PurgeGate(ctx, "g2"); err != nil || n != 1 {
		t.Fatalf("purge = %d, %v; want 1", n, err)
	}
	members, err := s.Members(ctx, "r")
	if err != nil || len(members) != 1 || members["s2"] != "g1" {
		t.Fatalf("members = %v, %v; want s2 on g1", members, err)
	}
	gates, _ = s.Gates(ctx, "r")
	if len(gates) != 1 || gates[0] != (room.GateCount{Gate: "g1", Members: 1}) {
		t.Fatalf("gates after purge = %v", gates)
	}
	// The last leave removes the key: no empty rooms pile up.
	must(s.Leave(ctx, "r", "s2"))
	if n, _ := rdb.Exists(ctx, s.Key("r")).Result(); n != 0 {
		t.Fatalf("empty room's key still exists")
	}
	// One key per room, with a hash tag: one Redis Cluster slot.
	if k := s.Key("lobby"); !strings.Contains(k, "{lobby}") {
		t.Fatalf("key %q has no hash tag", k)
	}
	if _, err := s.Join(ctx, strings.Repeat("x", 256), "s", "g"); !errors.Is(err, room.ErrInvalid) {
		t.Fatalf("long name: %v", err)
	}
}

// TestPurgeGateManyRooms: a gate with members in more rooms than one
// pipeline carries loses them all, other gates' members stay, and it works
// when Redis has forgotten the script (SCRIPT FLUSH, a restart).
func TestPurgeGateManyRooms(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testkit.Redis(t)})
	defer rdb.Close()
	s := room.New(rdb, "tp:")
	ctx := context.Background()
	const rooms = 700
	for i := range rooms {
		r := "r" + strconv.Itoa(i)
		if _, err := s.Join(ctx, r, "a"+strconv.Itoa(i), "dead"); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if _, err := s.Join(ctx, r, "b"+strconv.Itoa(i), "live"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PurgeGate(ctx, "dead"); err != nil || n != rooms {
		t.Fatalf("purge = %d, %v; want %d", n, err, rooms)
	}
	for i := range rooms {
		m, err := s.Members(ctx, "r"+strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		if i%2 == 0 {
			want = 1
		}
		if len(m) != want || (want == 1 && m["b"+strconv.Itoa(i)] != "live") {
			t.Fatalf("room r%d after purge: %v", i, m)
		}
	}
	if n, err := s.PurgeGate(ctx, "dead"); err != nil || n != 0 {
		t.Fatalf("second purge = %d, %v; want 0", n, err)
	}
}

// TestGateIndexForgetsEmptiedRooms: a gate's room set (what PurgeGate
// walks) drops a room once the gate has no member left in it, by leaving
// or by moving to another gate, so it does not grow with every room a
// gate ever had members in.
func TestGateIndexForgetsEmptiedRooms(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testkit.Redis(t)})
	defer rdb.Close()
	s := room.New(rdb, "ix:")
	ctx := context.Background()
	index := func(gate string) map[string]bool {
		t.Helper()
		rooms, err := rdb.SMembers(ctx, "ix:gaterooms:{"+gate+"}").Result()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, r := range rooms {
			out[r] = true
		}
		return out
	}
	for i := 0; i < 100; i++ {
		r := "match-" + strconv.Itoa(i)
		for _, sid := range []string{"a", "b"} {
			if _, err := s.Join(ctx, r, sid, "g1"); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.Leave(ctx, r, "a"); err != nil {
			t.Fatal(err)
		}
		if !index("g1")[r] {
			t.Fatalf("%s left the index of g1 while b is still in it", r)
		}
		if _, err := s.Leave(ctx, r, "b"); err != nil {
			t.Fatal(err)
		}
	}
	if ix := index("g1"); len(ix) != 0 {
		t.Fatalf("g1's room index keeps %d emptied rooms, e.g. %v", len(ix), ix)
	}
	// A member moving to another gate takes the room out of the old gate's
	// index and into the new one's.
	if _, err := s.Join(ctx, "lobby", "c", "g1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Join(ctx, "lobby", "c", "g2"); err != nil {
		t.Fatal(err)
	}
	if index("g1")["lobby"] || !index("g2")["lobby"] {
		t.Fatalf("after the move: g1 %v, g2 %v", index("g1"), index("g2"))
	}
}
