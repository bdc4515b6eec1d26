package rooms_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/zcluster/zcluster"
	"github.com/zcluster/zcluster/examples/rooms"
	"github.com/zcluster/zcluster/zctest"
)

func startLobby(t *testing.T) *zctest.Cluster {
	return zctest.Start(t, zctest.Config{
		Gates:   2,
		Gate:    rooms.SetupGate,
		Backend: rooms.SetupBackend,
		Groups:  []string{rooms.Group},
	})
}

func presence(t *testing.T, cl *zctest.Client) rooms.Presence {
	t.Helper()
	var p rooms.Presence
	cl.ExpectJSON(rooms.MsgPresence, &p)
	return p
}

func TestLobby(t *testing.T) {
	c := startLobby(t)
	ann := c.Client(t, 0).Login("ann")
	bob := c.Client(t, 1).Login("bob") // the other gate
	cat := c.Client(t, 0).Login("cat") // never joins

	var r rooms.RoomReply
	ann.SendJSON(rooms.MsgJoin, rooms.RoomRequest{Room: "hall"})
	ann.ExpectJSON(rooms.MsgJoin, &r)
	if r.Members != 1 {
		t.Fatalf("join: %+v", r)
	}
	if p := presence(t, ann); p.User != "ann" || p.Event != "join" {
		t.Fatalf("presence = %+v", p)
	}
	bob.SendJSON(rooms.MsgJoin, rooms.RoomRequest{Room: "hall"})
	bob.ExpectJSON(rooms.MsgJoin, &r)
	for _, cl := range []*zctest.Client{ann, bob} {
		if p := presence(t, cl); p.User != "bob" || p.Event != "join" || p.Members != 2 {
			t.Fatalf("presence of bob's join = %+v", p)
		}
	}

	// Saying reaches the members on both gates, not the others.
	bob.SendJSON(rooms.MsgSay, rooms.RoomRequest{Room: "hall", Text: "hi all"})
	for _, cl := range []*zctest.Client{ann, bob} {
		var s rooms.Said
		cl.ExpectJSON(rooms.MsgSaid, &s)
		if s.From != "bob" || s.Text != "hi all" || s.Room != "hall" {
			t.Fatalf("said = %+v", s)
		}
	}
	cat.ExpectNone(rooms.MsgSaid, 300*time.Millisecond)
	cat.SendJSON(rooms.MsgSay, rooms.RoomRequest{Room: "hall", Text: "let me in"})
	if e := cat.ExpectError(rooms.MsgSay); !strings.Contains(e, "join the room first") {
		t.Fatalf("say outside the room: %q", e)
	}
	// A body that is not JSON is an error frame too.
	cat.Send(rooms.MsgJoin, []byte("hall"))
	if e := cat.ExpectError(rooms.MsgJoin); !strings.Contains(e, "bad request") {
		t.Fatalf("bad body: %q", e)
	}

	// Presence: members of the room, and everyone online.
	deadline := time.Now().Add(10 * time.Second)
	for {
		cat.SendJSON(rooms.MsgWho, rooms.RoomRequest{Room: "hall"})
		cat.ExpectJSON(rooms.MsgWho, &r)
		if r.Members == 2 && r.Online == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("who = %+v, want 2 members and 3 online", r)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Leaving, and going away: the room is told either way.
	ann.SendJSON(rooms.MsgLeave, rooms.RoomRequest{Room: "hall"})
	ann.ExpectJSON(rooms.MsgLeave, &r)
	if p := presence(t, bob); p.User != "ann" || p.Event != "leave" || p.Members != 1 {
		t.Fatalf("presence of ann's leave = %+v", p)
	}
	ann.SendJSON(rooms.MsgJoin, rooms.RoomRequest{Room: "hall"})
	ann.ExpectJSON(rooms.MsgJoin, &r)
	presence(t, bob) // ann joined again
	bob.Close()
	for {
		p := presence(t, ann)
		if p.User == "bob" && p.Event == "leave" {
			if p.Members != 1 {
				t.Fatalf("after bob went away: %+v, want 1 member", p)
			}
			break
		}
	}
}

// The binary's main is zcluster.Main(rooms.App()): its demo starts the
// lobby.
func TestAppDemo(t *testing.T) {
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := zcluster.Run(ctx, []string{"demo", "--once"}, rooms.App(),
		zcluster.WithStdio(strings.NewReader(""), &out, &errb),
		zcluster.WithLookupEnv(func(string) (string, bool) { return "", false }))
	if code != 0 || !strings.Contains(out.String(), "lobby-1 (lobby)") {
		t.Fatal(fmt.Sprintf("rooms demo --once: exit %d\n%s\n%s", code, out.String(), errb.String()))
	}
}
