package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/inbox"
	"github.com/zcluster/zcluster/internal/tools/zclient"
	"github.com/zcluster/zcluster/protocol"
	"github.com/zcluster/zcluster/relay"
)

// chatTimeout bounds dialling the gate.
const chatTimeout = 5 * time.Second

// loginAnswerTimeout bounds the wait for the answer to the login: a gate
// answers at once; something else on the port may never answer.
const loginAnswerTimeout = 3 * time.Second

const chatHelp = "commands: @user text (send) | !user text (reliable: stored if offline) | /all text (broadcast) | /echo text (chain-echo via im and echo) | /quit"

func newChatCmd(c *cli) *cobra.Command {
	var gateAddr, wsURL, kcpAddr, user string
	var reconnect time.Duration
	var prompt bool
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
resumes its inbox: the reliable messages stored for the user (the last
--inbox-max of the last --inbox-ttl, as the cluster keeps them) are
printed first, marked "sent while you were away". If the gate goes away it logs in again (on the next address of
--gate, for up to --reconnect) and resumes from the last reliable message
it printed, so nothing sent meanwhile is missed. A send that was delivered
prints nothing, one that was not prints why. A login of the same user
elsewhere kicks this one. On a terminal a prompt shows the user and the
gate ("alice@gate-1> "); --prompt=false turns it off, --prompt turns it on
for piped input.

It connects over TCP to --gate, or over WebSocket to --ws (a gate's
--ws-listen endpoint, ws:// or wss://), or over KCP to --kcp (a gate's
--kcp-listen address); each takes a comma list.`,
		Example: `  zcluster chat --gate 127.0.0.1:18001,127.0.0.1:18002 --user alice
  zcluster chat --ws ws://127.0.0.1:18301/ws --user bob`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("prompt") {
				prompt = isTerminal(c.stdin)
			}
			gates, err := chatAddrs(gateAddr, wsURL, kcpAddr)
			if err != nil {
				return err
			}
			return c.runChat(cmd.Context(), chatOptions{gates: gates, user: user, reconnect: reconnect, prompt: prompt})
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&prompt, "prompt", false, "show a \"user@gate> \" prompt (default: when stdin is a terminal)")
	fs.StringVar(&gateAddr, "gate", "127.0.0.1:18001", "client address of a gate, host:port; a comma list is tried in turn when reconnecting")
	fs.StringVar(&wsURL, "ws", "", "join over WebSocket instead: a gate's endpoint URL, ws://host:port/ws or wss://... (comma list)")
	fs.StringVar(&kcpAddr, "kcp", "", "join over KCP instead: a gate's --kcp-listen address, host:port (comma list)")
	fs.StringVar(&user, "user", "", "user name to log in as, 1-64 bytes (required)")
	fs.DurationVar(&reconnect, "reconnect", 30*time.Second, "how long to keep trying to log in again after the gate went away (0: exit at once)")
	annotateEnv(fs)
	return cmd
}

// chatOptions are the chat command's settings.
type chatOptions struct {
	// gates are TCP addresses, ws:// or wss:// URLs, or kcp://host:port.
	gates     []string
	user      string
	reconnect time.Duration
	prompt    bool // show "user@gate> "
}

// isTerminal reports whether r is a terminal (a character device).
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// syncWriter serialises writes from the receiver and the input loop, and
// keeps the prompt (if any) after the last line.
type syncWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prompt string // "" for none
	shown  bool   // the prompt is the last thing written
}

// println writes a line; a prompt on screen is replaced by it and shown
// again after it.
func (s *syncWriter) println(a ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shown {
		fmt.Fprint(s.w, "\r\033[K") // back over the prompt, clear the line
	}
	fmt.Fprintln(s.w, a...)
	s.shown = false
	s.showPromptLocked()
}

// setPrompt sets the prompt ("" for none) and shows it.
func (s *syncWriter) setPrompt(p string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prompt = p
	s.showPromptLocked()
}

// showPrompt writes the prompt again after the user pressed Enter.
func (s *syncWriter) showPrompt() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shown = false // the user's Enter moved to a new line
	s.showPromptLocked()
}

func (s *syncWriter) showPromptLocked() {
	if s.prompt != "" && !s.shown {
		fmt.Fprint(s.w, s.prompt)
		s.shown = true
	}
}

// gateShuttingDown is the kick reason of a gate that stops.
const gateShuttingDown = "gate shutting down"

// errConnLost ends one connection of the chat client without ending it.
var errConnLost = errors.New("the gate closed the connection")

// chatAddrs turns --gate, --ws and --kcp into the list of addresses to
// try: --ws or --kcp, when given, replace --gate.
func chatAddrs(gate, ws, kcp string) ([]string, error) {
	switch {
	case ws != "" && kcp != "":
		return nil, errors.New("--ws and --kcp: choose one")
	case ws != "":
		urls := splitList(ws)
		for _, u := range urls {
			if !strings.HasPrefix(u, "ws://") && !strings.HasPrefix(u, "wss://") {
				return nil, fmt.Errorf("--ws %q: want a ws:// or wss:// URL", u)
			}
		}
		return urls, nil
	case kcp != "":
		var out []string
		for _, a := range splitList(kcp) {
			out = append(out, "kcp://"+a)
		}
		return out, nil
	}
	return splitList(gate), nil
}

// dialChat connects to addr: a TCP address, a ws:// or wss:// URL, or
// kcp://host:port.
func dialChat(ctx context.Context, addr string) (*zclient.Conn, error) {
	switch {
	case strings.HasPrefix(addr, "ws://"), strings.HasPrefix(addr, "wss://"):
		return zclient.DialWS(ctx, addr, zclient.WSOptions{})
	case strings.HasPrefix(addr, "kcp://"):
		return zclient.DialKCP(ctx, strings.TrimPrefix(addr, "kcp://"))
	}
	return zclient.Dial(ctx, addr)
}

// chatLogin dials addr and logs in as user.
func chatLogin(ctx context.Context, addr, user string) (*zclient.Conn, chat.LoginReply, error) {
	dctx, cancel := context.WithTimeout(ctx, chatTimeout)
	defer cancel()
	var lr chat.LoginReply
	conn, err := dialChat(dctx, addr)
	if err != nil {
		return nil, lr, fmt.Errorf("gate at %s not reachable: %w", addr, err)
	}
	fail := func(err error) (*zclient.Conn, chat.LoginReply, error) {
		_ = conn.Close()
		return nil, lr, err
	}
	if lr, err = loginAnswer(ctx, conn, addr, user); err != nil {
		return fail(err)
	}
	return conn, lr, nil
}

// loginAnswer sends the login and waits for the gate's answer. Whatever
// else listens on the port gets a one-line reason: a zcluster relay port
// (it greets with its handshake challenge), a service that answers
// something other than a login reply, or one that never answers.
func loginAnswer(ctx context.Context, conn *zclient.Conn, addr, user string) (chat.LoginReply, error) {
	var lr chat.LoginReply
	if err := conn.Send(chat.MsgLogin, []byte(user)); err != nil {
		return lr, fmt.Errorf("login at %s: %w", addr, err)
	}
	lctx, cancel := context.WithTimeout(ctx, loginAnswerTimeout)
	defer cancel()
	for {
		f, err := conn.Recv(lctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return lr, ctx.Err()
		case errors.Is(err, context.DeadlineExceeded):
			return lr, fmt.Errorf("no answer from %s (is it a zcluster gate?)", addr)
		case err != nil:
			// A relay port greets first, then closes on the login; the
			// greeting can be lost with the close. Ask it again, saying
			// nothing this time.
			if greetsLikeRelay(ctx, addr) {
				return lr, fmt.Errorf("%s is not a zcluster gate (a relay port?): it greets with a relay handshake challenge", addr)
			}
			return lr, fmt.Errorf("%s closed the connection without answering the login (is it a zcluster gate?)", addr)
		}
		switch f.MsgID {
		case chat.MsgLogin:
			if err := json.Unmarshal(f.Payload, &lr); err != nil || (!lr.OK && lr.Error == "") {
				if isRelayChallenge(f) {
					return lr, fmt.Errorf("%s is not a zcluster gate (a relay port?): it greeted with a relay handshake challenge", addr)
				}
				return lr, fmt.Errorf("%s is not a zcluster gate: it answered the login with %q", addr, clip(f.Payload, 40))
			}
			if !lr.OK {
				return lr, fmt.Errorf("login as %q refused: %s", user, lr.Error)
			}
			return lr, nil
		case chat.MsgError:
			var e errorFrame
			if json.Unmarshal(f.Payload, &e) == nil && e.Error != "" {
				return lr, fmt.Errorf("login at %s: %s", addr, e.Error)
			}
		case chat.MsgKick, protocol.MsgHeartbeat:
			continue
		}
		return lr, fmt.Errorf("%s is not a zcluster gate running the chat app: it answered the login with msgID %d %q", addr, f.MsgID, clip(f.Payload, 40))
	}
}

// isRelayChallenge reports whether f is the greeting of a relay listener:
// its handshake challenge (relay.FrameChallenge, which is msgID 1 like a
// login): version byte, 32-byte nonce.
func isRelayChallenge(f zclient.Frame) bool {
	return f.MsgID == relay.FrameChallenge && len(f.Payload) == 33 && f.Payload[0] == relay.Version
}

// greetsLikeRelay connects to addr again, sends nothing, and reports
// whether it greets with a relay handshake challenge within a second.
func greetsLikeRelay(ctx context.Context, addr string) bool {
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	conn, err := zclient.Dial(pctx, addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	f, err := conn.Recv(pctx)
	return err == nil && isRelayChallenge(f)
}

// clip returns at most n bytes of b, with "..." when cut.
func clip(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "..."
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
		if o.prompt {
			out.setPrompt(lr.User + "@" + lr.Gate + "> ")
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
		conn, err := dialChat(dctx, addr)
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
	// A quiet chat keeps its connection: the gate closes connections that
	// send nothing for --idle-timeout (60s by default).
	beat := time.NewTicker(chatHeartbeat)
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-beat.C:
			if err := conn.Send(protocol.MsgHeartbeat, nil); err != nil {
				return fmt.Errorf("%w: %v", errConnLost, err)
			}
		case err := <-recvDone:
			recvDone <- err // for the deferred wait
			return err
		case line, ok := <-lines:
			if !ok {
				return nil // end of input
			}
			cmd := parseChatLine(line)
			if !cmd.quit {
				out.showPrompt()
			}
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

// chatHeartbeat is how often a chat client sends the heartbeat msgID.
const chatHeartbeat = 20 * time.Second

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
		case protocol.MsgHeartbeat:
			continue
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

// renderFrame turns a received frame into a line for a human ("" for
// nothing to show: a send that was delivered), and says whether it was a
// kick.
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
				return "", false
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
