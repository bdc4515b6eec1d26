// Package rooms is a small multi-room lobby built only on zcluster's public
// API: users log in at a gate, join and leave rooms, say things in a room,
// and see who comes and goes. Its binary (cmd/rooms) is ten lines of main
// on zcluster.Main; its tests run on zctest.
//
//	msgID  where  request (JSON)            answer / pushes
//	1      gate   user name (raw bytes)     1 {"ok":true,"user","session"}
//	10     lobby  {"room"}                  10 {"room","members"}; 113 presence "join" to the room
//	11     lobby  {"room"}                  11 {"room","members"}; 113 presence "leave" to the room
//	12     lobby  {"room","text"}           112 {"room","from","text"} to the room (members only)
//	13     lobby  {"room"}                  13 {"room","members","online"}
//
// When a client goes away (disconnect, kick, or its gate dies) the
// framework takes it out of its rooms, and the lobby tells each room
// ("leave" presence) from its OnSessionClosed hook.
package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/zcluster/zcluster"
	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/gate"
)

// Client msgIDs.
const (
	MsgLogin    uint32 = 1
	MsgJoin     uint32 = 10
	MsgLeave    uint32 = 11
	MsgSay      uint32 = 12
	MsgWho      uint32 = 13
	MsgSaid     uint32 = 112
	MsgPresence uint32 = 113
)

// Group is the backend group of the lobby.
const Group = "lobby"

// LoginReply answers MsgLogin.
type LoginReply struct {
	OK      bool   `json:"ok"`
	User    string `json:"user,omitempty"`
	Session string `json:"session,omitempty"`
	Error   string `json:"error,omitempty"`
}

// RoomRequest is the body of MsgJoin, MsgLeave, MsgSay and MsgWho.
type RoomRequest struct {
	Room string `json:"room"`
	Text string `json:"text,omitempty"`
}

// RoomReply answers MsgJoin, MsgLeave and MsgWho.
type RoomReply struct {
	Room    string `json:"room"`
	Members int    `json:"members"`
	Online  int    `json:"online,omitempty"`
}

// Said is pushed to a room's members (MsgSaid).
type Said struct {
	Room string `json:"room"`
	From string `json:"from"`
	Text string `json:"text"`
}

// Presence is pushed to a room's members when someone joins or leaves
// (MsgPresence).
type Presence struct {
	Room    string `json:"room"`
	User    string `json:"user"`
	Event   string `json:"event"` // "join" or "leave"
	Members int    `json:"members"`
}

// ErrNotInRoom answers MsgSay from a session that has not joined the room.
var ErrNotInRoom = errors.New("join the room first")

// App is the lobby as a zcluster application, for zcluster.Main.
func App() zcluster.App {
	return zcluster.App{Name: "rooms", Gate: SetupGate, Backend: SetupBackend, Groups: []string{Group}}
}

// SetupGate registers the login.
func SetupGate(g *gate.Gate) error {
	g.Handle(MsgLogin, "login", func(c *gate.Context) error {
		name := string(c.Payload())
		if name == "" || len(name) > 32 || !utf8.ValidString(name) {
			return errors.New("user name must be 1-32 bytes of UTF-8")
		}
		if err := c.Login(name); err != nil {
			return err
		}
		return reply(c, LoginReply{OK: true, User: name, Session: c.Session()})
	}, gate.Anonymous())
	return nil
}

func reply(c *gate.Context, v LoginReply) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.Reply(MsgLogin, b)
}

// lobby is one backend's side. It remembers which rooms each session is
// in on this node (a session's messages always reach the same node of the
// group while the group does not change), to refuse speaking in a room one
// is not in and to announce departures.
type lobby struct {
	b     *backend.Backend
	mu    sync.Mutex
	rooms map[string]map[string]bool // session -> rooms
}

// SetupBackend registers the lobby's handlers on a backend of group
// "lobby".
func SetupBackend(b *backend.Backend) error {
	if b.Group() != Group {
		return fmt.Errorf("rooms: no handlers for group %q (want %q)", b.Group(), Group)
	}
	l := &lobby{b: b, rooms: map[string]map[string]bool{}}
	b.Handle(MsgJoin, "join", backend.Typed(l.join))
	b.Handle(MsgLeave, "leave", backend.Typed(l.leave))
	b.Handle(MsgSay, "say", backend.Typed(l.say))
	b.Handle(MsgWho, "who", backend.Typed(l.who))
	b.OnSessionClosed(l.closed)
	return nil
}

func (l *lobby) join(c *backend.Context, r *RoomRequest) (*RoomReply, error) {
	if err := c.Join(r.Room); err != nil {
		return nil, err
	}
	l.mu.Lock()
	if l.rooms[c.Session()] == nil {
		l.rooms[c.Session()] = map[string]bool{}
	}
	l.rooms[c.Session()][r.Room] = true
	l.mu.Unlock()
	n, err := l.announce(c, r.Room, c.User(), "join")
	return &RoomReply{Room: r.Room, Members: n}, err
}

func (l *lobby) leave(c *backend.Context, r *RoomRequest) (*RoomReply, error) {
	if err := c.Leave(r.Room); err != nil {
		return nil, err
	}
	l.mu.Lock()
	delete(l.rooms[c.Session()], r.Room)
	l.mu.Unlock()
	n, err := l.announce(c, r.Room, c.User(), "leave")
	return &RoomReply{Room: r.Room, Members: n}, err
}

func (l *lobby) say(c *backend.Context, r *RoomRequest) (*RoomReply, error) {
	l.mu.Lock()
	in := l.rooms[c.Session()][r.Room]
	l.mu.Unlock()
	if !in {
		return nil, fmt.Errorf("%w %q", ErrNotInRoom, r.Room)
	}
	p, err := c.Encode(Said{Room: r.Room, From: c.User(), Text: r.Text})
	if err != nil {
		return nil, err
	}
	return nil, c.PushRoom(r.Room, MsgSaid, p) // no reply: the speaker hears it as a member
}

func (l *lobby) who(c *backend.Context, r *RoomRequest) (*RoomReply, error) {
	n, err := c.RoomCount(r.Room)
	if err != nil {
		return nil, err
	}
	on, err := c.OnlineCount()
	return &RoomReply{Room: r.Room, Members: n, Online: on}, err
}

// announce pushes a presence event to room and returns its member count.
func (l *lobby) announce(c *backend.Context, room, user, event string) (int, error) {
	n, err := c.RoomCount(room)
	if err != nil {
		return 0, err
	}
	p, err := c.Encode(Presence{Room: room, User: user, Event: event, Members: n})
	if err != nil {
		return 0, err
	}
	return n, c.PushRoom(room, MsgPresence, p)
}

// hookTimeout bounds the pushes of one departure.
const hookTimeout = 5 * time.Second

// closed runs when a session that used the lobby is gone (disconnect,
// kick, or its gate died): the framework has taken it out of its rooms;
// tell each room.
func (l *lobby) closed(session, user string) {
	l.mu.Lock()
	rooms := l.rooms[session]
	delete(l.rooms, session)
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), hookTimeout)
	defer cancel()
	for room := range rooms {
		n, err := l.b.RoomCount(ctx, room)
		if err != nil {
			continue
		}
		p, err := json.Marshal(Presence{Room: room, User: user, Event: "leave", Members: n})
		if err == nil {
			_ = l.b.PushRoom(ctx, room, MsgPresence, p)
		}
	}
}
