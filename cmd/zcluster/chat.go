package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/inbox"
	"github.com/zcluster/zcluster/internal/zclient"
)

// chatTimeout bounds dialling the gate and the login.
const chatTimeout = 5 * time.Second

const chatHelp = "commands: @user text (send) | !user text (reliable: stored if offline) | /all text (broadcast) | /echo text (chain-echo via im and echo) | /quit"

func newChatCmd(c *cli) *cobra.Command {
	var gateAddr, user string
	var reconnect time.Duration
	cmd := &cobra.Command{
		Use:   "chat",
		Short: "Chat through a gate running the chat app: an interactive line client",
		Long: `chat connects to a gate, logs in as --user and reads commands from stdin:

  @bob hi      send "hi" to bob, on whichever gate he is (lost if he is offline)
  !bob hi      reliable send: stored in bob's inbox, he gets it when he is back
  /all text    broadcast to every logged-in user
  /echo text   chain-echo: im asks echo, the text comes back
  /quit        leave (so does end of input)

Everything received is printed as it arrives. After the login the client
resumes its inbox: reliable messages stored while it was away are printed
first. If the gate goes away it logs in again (on the next address of
--gate, for up to --reconnect) and resumes from the last reliable message
it printed, so nothing sent meanwhile is missed. A login of the same user
elsewhere kicks this one.`,
		Example: "  zcluster chat --gate 127.0.0.1:18001,127.0.0.1:18002 --user alice",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.runChat(cmd.Context(), chatOptions{gates: splitList(gateAddr), user: user, reconnect: reconnect})
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&gateAddr, "gate", "127.0.0.1:18001", "client address of a gate, host:port; a comma list is tried in turn when reconnecting")
	fs.StringVar(&user, "user", "", "user name to log in as, 1-64 bytes (required)")
	fs.DurationVar(&reconnect, "reconnect", 30*time.Second, "how long to keep trying to log in again after the gate went away (0: exit at once)")
	annotateEnv(fs)
	return cmd
}

// chatOptions are the chat command's settings.
type chatOptions struct {
	gates     []string
	user      string
	reconnect time.Duration
}

// syncWriter serialises writes from the receiver and the input loop.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) println(a ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintln(s.w, a...)
}

// gateShuttingDown is the kick reason of a gate that stops.
const gateShuttingDown = "gate shutting down"

// errConnLost ends one connection of the chat client without ending it.
var errConnLost = errors.New("the gate closed the connection")

// chatLogin dials addr and logs in as user.
func chatLogin(ctx context.Context, addr, user string) (*zclient.Conn, chat.LoginReply, error) {
	dctx, cancel := context.WithTimeout(ctx, chatTimeout)
	defer cancel()
	var lr chat.LoginReply
	conn, err := zclient.Dial(dctx, addr)
	if err != nil {
		return nil, lr, fmt.Errorf("gate at %s not reachable: %w", addr, err)
	}
	fail := func(err error) (*zclient.Conn, chat.LoginReply, error) {
		_ = conn.Close()
		return nil, lr, err
	}
	if err := conn.Send(chat.MsgLogin, []byte(user)); err != nil {
		return fail(fmt.Errorf("login: %w", err))
	}
	f, err := expect(dctx, conn, chat.MsgLogin)
	if err != nil {
		return fail(fmt.Errorf("login: %w", err))
	}
	if err := json.Unmarshal(f.Payload, &lr); err != nil {
		return fail(fmt.Errorf("login: reply %q: %w", f.Payload, err))
	}
	if !lr.OK {
		return fail(fmt.Errorf("login as %q refused: %s", user, lr.Error))
	}
	return conn, lr, nil
}

// runChat logs in and runs the line client until /quit, end of input, a
// kick, or ctx ending. When the gate goes away it logs in again and resumes;
// it fails if no gate takes it back within the reconnect period.
func (c *cli) runChat(ctx context.Context, o chatOptions) error {
	if o.user == "" {
		return errors.New("--user (or ZC_USER) is required")
	}
	if len(o.gates) == 0 {
		return errors.New("--gate (or ZC_GATE) is required")
	}
	out := &syncWriter{w: c.stdout}
	stop := make(chan struct{})
	defer close(stop)
	lines := make(chan string)
	go readLines(c.stdin, lines, stop)

	var rs reliableState
	for i := 0; ; i++ {
		conn, lr, err := chatLogin(ctx, o.gates[i%len(o.gates)], o.user)
		if err != nil {
			return err
		}
		if i == 0 {
			out.println(fmt.Sprintf("logged in as %s on %s (session %s)", lr.User, lr.Gate, lr.Session))
			out.println(chatHelp)
		} else {
			out.println(fmt.Sprintf("logged in again as %s on %s; resuming after reliable message %d", lr.User, lr.Gate, rs.cursor.Offset))
		}
		err = c.chatConn(ctx, conn, out, lines, &rs)
		_ = conn.Close()
		if !errors.Is(err, errConnLost) || o.reconnect <= 0 {
			return err
		}
		out.println("connection lost; logging in again")
		if i, err = c.chatRedial(ctx, o, i, out); err != nil {
			return err
		}
		i-- // the loop's i++ lands on the address that answered
	}
}

// chatRedial waits until a gate of o answers, trying them in turn from
// after index i for up to o.reconnect, and returns the index of the one
// that did.
func (c *cli) chatRedial(ctx context.Context, o chatOptions, i int, out *syncWriter) (int, error) {
	deadline := time.Now().Add(o.reconnect)
	wait := 100 * time.Millisecond
	for {
		i++
		addr := o.gates[i%len(o.gates)]
		dctx, cancel := context.WithTimeout(ctx, chatTimeout)
		conn, err := zclient.Dial(dctx, addr)
		cancel()
		if err == nil {
			_ = conn.Close()
			return i, nil
		}
		if time.Now().After(deadline) {
			return i, fmt.Errorf("%w, and no gate of %s answered for %v", errConnLost, strings.Join(o.gates, ","), o.reconnect)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return i, ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// chatConn runs the client on one logged-in connection: it resumes the
// inbox, then prints what arrives and sends what is typed. It returns nil
// on /quit, end of input, a kick or ctx ending, and errConnLost when the
// gate closed the connection.
func (c *cli) chatConn(ctx context.Context, conn *zclient.Conn, out *syncWriter, lines <-chan string, rs *reliableState) error {
	if err := conn.Send(inbox.MsgResume, rs.cursor.Request().Append(nil)); err != nil {
		return fmt.Errorf("%w: %v", errConnLost, err)
	}
	recvDone := make(chan error, 1)
	go func() { recvDone <- receive(conn, out, rs) }()
	defer func() {
		_ = conn.Close()
		<-recvDone // the cursor belongs to the receiver until it ends
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-recvDone:
			recvDone <- err // for the deferred wait
			return err
		case line, ok := <-lines:
			if !ok {
				return nil // end of input
			}
			cmd := parseChatLine(line)
			switch {
			case cmd.quit:
				return nil
			case cmd.help:
				out.println(chatHelp)
			case cmd.msgID != 0:
				if err := conn.Send(cmd.msgID, cmd.payload); err != nil {
					return fmt.Errorf("send to the gate: %w", err)
				}
			}
		}
	}
}

// readLines sends each line of r to lines and closes it at end of input.
func readLines(r io.Reader, lines chan<- string, stop <-chan struct{}) {
	defer close(lines)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		select {
		case lines <- sc.Text():
		case <-stop:
			return
		}
	}
}

// reliableState is the chat client's position in its inbox, kept across
// reconnections.
type reliableState struct {
	cursor inbox.Cursor
	// replayTo is the last offset of the current resume's replay: messages
	// up to it were sent while the client was away.
	replayTo uint64
}

// receive prints every frame until the connection ends. It returns nil
// after a kick and errConnLost when the gate closed the connection
// otherwise.
func receive(conn *zclient.Conn, out *syncWriter, rs *reliableState) error {
	for f := range conn.Frames() {
		var line string
		var kicked bool
		switch f.MsgID {
		case inbox.MsgResume, inbox.MsgMessage:
			line = rs.frame(f)
		default:
			line, kicked = renderFrame(f)
		}
		if line != "" {
			out.println(line)
		}
		if kicked {
			var k kickNotice
			if json.Unmarshal(f.Payload, &k) == nil && k.Reason == gateShuttingDown {
				return errConnLost // another gate takes us
			}
			return nil
		}
	}
	return errConnLost
}

// frame applies a reliable-channel frame to the cursor and renders it ("" if
// there is nothing to show: a duplicate, a plain resume answer).
func (rs *reliableState) frame(f zclient.Frame) string {
	if f.MsgID == inbox.MsgResume {
		a, err := inbox.ParseResumeAnswer(f.Payload)
		if err != nil {
			return "resume: " + err.Error()
		}
		rs.cursor.Answer(a)
		rs.replayTo = a.Last
		if a.Status == inbox.StatusGap {
			return fmt.Sprintf("some reliable messages were lost (inbox trimmed, expired or reset): resuming at %d", a.Next)
		}
		return ""
	}
	m, err := inbox.ParseMessage(f.Payload)
	if err != nil {
		return "reliable message: " + err.Error()
	}
	isNew, err := rs.cursor.Message(m)
	if err != nil {
		return "reliable message: " + err.Error()
	}
	if !isNew {
		return ""
	}
	var msg chat.Message
	if m.MsgID != chat.MsgReliableMsg || json.Unmarshal(m.Payload, &msg) != nil {
		return fmt.Sprintf("reliable msgID %d: %s", m.MsgID, m.Payload)
	}
	if m.Offset <= rs.replayTo {
		return fmt.Sprintf("[%s] %s (sent while you were away)", msg.From, msg.Text)
	}
	return fmt.Sprintf("[%s] %s", msg.From, msg.Text)
}

// chatCommand is one parsed input line.
type chatCommand struct {
	msgID   uint32 // 0: nothing to send
	payload []byte
	quit    bool
	help    bool
}

// parseChatLine turns an input line into a command: "@bob hi" sends, "!bob
// hi" sends reliably,
// "/all text" broadcasts, "/echo text" chain-echoes, "/quit" quits, a blank
// line does nothing and anything else asks for help.
func parseChatLine(line string) chatCommand {
	line = strings.TrimSpace(line)
	head, rest, _ := strings.Cut(line, " ")
	rest = strings.TrimSpace(rest)
	switch {
	case line == "":
		return chatCommand{}
	case line == "/quit":
		return chatCommand{quit: true}
	case head == "/all" && rest != "":
		return chatCommand{msgID: chat.MsgBroadcast, payload: []byte(rest)}
	case head == "/echo" && rest != "":
		return chatCommand{msgID: chat.MsgChainEcho, payload: []byte(rest)}
	case strings.HasPrefix(head, "@") && len(head) > 1 && rest != "":
		b, _ := json.Marshal(chat.SendRequest{To: head[1:], Text: rest})
		return chatCommand{msgID: chat.MsgSend, payload: b}
	case strings.HasPrefix(head, "!") && len(head) > 1 && rest != "":
		b, _ := json.Marshal(chat.SendRequest{To: head[1:], Text: rest})
		return chatCommand{msgID: chat.MsgReliable, payload: b}
	}
	return chatCommand{help: true}
}

// renderFrame turns a received frame into a line for a human, and says
// whether it was a kick.
func renderFrame(f zclient.Frame) (line string, kicked bool) {
	switch f.MsgID {
	case chat.MsgDelivered:
		var m chat.Message
		if json.Unmarshal(f.Payload, &m) == nil {
			return fmt.Sprintf("[%s] %s", m.From, m.Text), false
		}
	case chat.MsgBroadcasted:
		var m chat.Message
		if json.Unmarshal(f.Payload, &m) == nil {
			return fmt.Sprintf("[all] %s: %s", m.From, m.Text), false
		}
	case chat.MsgChainEcho, chat.MsgEcho:
		return "echo: " + string(f.Payload), false
	case chat.MsgSend:
		var r chat.SendReply
		if json.Unmarshal(f.Payload, &r) == nil {
			if r.OK {
				return "sent", false
			}
			return r.Error, false
		}
	case chat.MsgReliable:
		var r chat.ReliableReply
		if json.Unmarshal(f.Payload, &r) == nil {
			switch {
			case !r.OK:
				return r.Error, false
			case r.Queued:
				return fmt.Sprintf("stored (offline: delivered when they are back, #%d)", r.Offset), false
			}
			return fmt.Sprintf("delivered (#%d)", r.Offset), false
		}
	case chat.MsgError:
		var e errorFrame
		if json.Unmarshal(f.Payload, &e) == nil {
			return "error: " + e.Error, false
		}
	case chat.MsgKick:
		var k kickNotice
		_ = json.Unmarshal(f.Payload, &k)
		return "kicked: " + k.Reason, true
	case chat.MsgLogin:
		var r chat.LoginReply
		if json.Unmarshal(f.Payload, &r) == nil && !r.OK {
			return "login: " + r.Error, false
		}
	}
	return fmt.Sprintf("msgID %d: %s", f.MsgID, f.Payload), false
}
