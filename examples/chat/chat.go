// Package chat is the zcluster demo application: login at the gate, user to
// user messages, broadcast, echo and a chain-echo that crosses two backend
// groups. It is what `zcluster demo` runs and what `--app chat` selects.
//
//	msgID  group  request               answer
//	1      gate   user name (1-64 B)    1 {"ok":true,"user","session","gate"}; an older login is kicked (9)
//	2      im     {"to","text"}         100 {"from","text"} to the recipient; 2 {"ok":true} or {"ok":false,"error"}
//	3      im     any bytes             3, the same bytes, answered by a node of group echo
//	4      im     any bytes             4, the same bytes (no login needed)
//	5      im     text                  101 {"from","text"} to every logged-in session
//	6      im     {"to","text"}         reliable: stored in the recipient's inbox, then 102 {"from","text"}
//	                                    inside an inbox.MsgMessage frame; 6 {"ok":true,"offset":N[,"queued":true]}
package chat

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/zcluster/zcluster/backend"
	"github.com/zcluster/zcluster/gate"
)

// Client msgIDs of the demo.
const (
	MsgLogin       uint32 = 1
	MsgSend        uint32 = 2
	MsgChainEcho   uint32 = 3
	MsgEcho        uint32 = 4
	MsgBroadcast   uint32 = 5
	MsgReliable    uint32 = 6 // a reliable direct message, stored for offline users
	MsgKick        uint32 = gate.MsgKick
	MsgDelivered   uint32 = 100 // a message from another user
	MsgBroadcasted uint32 = 101 // a broadcast from a user
	MsgReliableMsg uint32 = 102 // a reliable message from another user (inside an inbox.MsgMessage frame)
	MsgError       uint32 = gate.MsgError
)

// Backend groups of the demo.
const (
	GroupIM   = "im"
	GroupEcho = "echo"
)

// LoginReply is the body of msgID 1.
type LoginReply struct {
	OK      bool   `json:"ok"`
	User    string `json:"user,omitempty"`
	Session string `json:"session,omitempty"`
	Gate    string `json:"gate,omitempty"`
	Error   string `json:"error,omitempty"`
}

// SendRequest is the body of msgID 2.
type SendRequest struct {
	To   string `json:"to"`
	Text string `json:"text"`
}

// SendReply answers msgID 2.
type SendReply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// ReliableReply answers msgID 6: the message is stored at Offset of the
// recipient's inbox; Queued says the recipient is offline and gets it when
// they log in and resume.
type ReliableReply struct {
	OK     bool   `json:"ok"`
	Offset uint64 `json:"offset,omitempty"`
	Queued bool   `json:"queued,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Message is the body of msgIDs 100 and 101.
type Message struct {
	From string `json:"from"`
	Text string `json:"text"`
}

// SetupGate registers the demo's gate handlers (login).
func SetupGate(g *gate.Gate) {
	g.Handle(MsgLogin, "login", login, gate.Anonymous())
}

func login(c *gate.Context) error {
	name := string(c.Payload())
	if len(name) == 0 || len(name) > 64 || !utf8.ValidString(name) {
		return reply(c.Reply, MsgLogin, LoginReply{Error: "user name must be 1-64 bytes of UTF-8"})
	}
	if err := c.Login(name); err != nil {
		if errors.Is(err, gate.ErrAlreadyLoggedIn) {
			return reply(c.Reply, MsgLogin, LoginReply{Error: err.Error()})
		}
		return err // Redis unavailable: an error frame
	}
	return reply(c.Reply, MsgLogin, LoginReply{OK: true, User: name, Session: c.Session(), Gate: c.GateID()})
}

// SetupBackend registers the handlers of the backend's group ("im" or
// "echo").
func SetupBackend(b *backend.Backend) error {
	switch b.Group() {
	case GroupIM:
		b.Handle(MsgSend, "send", send)
		b.Handle(MsgChainEcho, "chain-echo", chainEcho)
		b.Handle(MsgEcho, "echo", echo, backend.Anonymous())
		b.Handle(MsgBroadcast, "broadcast", broadcast)
		b.Handle(MsgReliable, "reliable-send", reliableSend)
	case GroupEcho:
		b.HandleCall(MsgChainEcho, "chain-echo", echo)
	default:
		return fmt.Errorf("chat: no handlers for group %q (want %q or %q)", b.Group(), GroupIM, GroupEcho)
	}
	return nil
}

func send(c *backend.Context) error {
	var req SendRequest
	if err := json.Unmarshal(c.Payload(), &req); err != nil || req.To == "" {
		return reply(c.Reply, MsgSend, SendReply{Error: `want {"to":"user","text":"..."}`})
	}
	msg, _ := json.Marshal(Message{From: c.User(), Text: req.Text})
	if err := c.PushUser(req.To, MsgDelivered, msg); err != nil {
		if errors.Is(err, backend.ErrOffline) {
			return reply(c.Reply, MsgSend, SendReply{Error: req.To + " is offline"})
		}
		return fmt.Errorf("cannot reach %s: %w", req.To, err) // e.g. Redis down: an error frame
	}
	return reply(c.Reply, MsgSend, SendReply{OK: true})
}

func reliableSend(c *backend.Context) error {
	var req SendRequest
	if err := json.Unmarshal(c.Payload(), &req); err != nil || req.To == "" {
		return reply(c.Reply, MsgReliable, ReliableReply{Error: `want {"to":"user","text":"..."}`})
	}
	msg, _ := json.Marshal(Message{From: c.User(), Text: req.Text})
	// The handler does not wait for Redis: the session's next message runs
	// while this one is stored, and the ack goes out once it is.
	later := c.Defer()
	err := c.DeliverAsync(req.To, MsgReliableMsg, msg, func(d backend.Delivery, err error) {
		if err != nil {
			later.Finish(fmt.Errorf("cannot store the message for %s: %w", req.To, err)) // Redis unavailable: an error frame
			return
		}
		later.Finish(reply(later.Reply, MsgReliable, ReliableReply{OK: true, Offset: d.Offset, Queued: !d.Online}))
	})
	if err != nil {
		return fmt.Errorf("cannot store the message for %s: %w", req.To, err)
	}
	return nil
}

func chainEcho(c *backend.Context) error {
	out, err := c.Call(c.Context(), GroupEcho, MsgChainEcho, c.Payload())
	if err != nil {
		return err
	}
	return c.Reply(MsgChainEcho, out)
}

func echo(c *backend.Context) error {
	return c.Reply(c.MsgID(), c.Payload())
}

func broadcast(c *backend.Context) error {
	msg, _ := json.Marshal(Message{From: c.User(), Text: string(c.Payload())})
	return c.Broadcast(MsgBroadcasted, msg)
}

func reply(fn func(uint32, []byte) error, msgID uint32, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return fn(msgID, b)
}
