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
	"github.com/zcluster/zcluster/internal/zclient"
)

// chatTimeout bounds dialling the gate and the login.
const chatTimeout = 5 * time.Second

const chatHelp = "commands: @user text (send to user) | /all text (broadcast) | /echo text (chain-echo via im and echo) | /quit"

func newChatCmd(c *cli) *cobra.Command {
	var (
		ep   chatEndpoint
		user string
	)
	cmd := &cobra.Command{
		Use:   "chat",
		Short: "Chat through a gate running the chat app: an interactive line client",
		Long: `chat connects to a gate, logs in as --user and reads commands from stdin:

  @bob hi      send "hi" to bob, on whichever gate he is
  /all text    broadcast to every logged-in user
  /echo text   chain-echo: im asks echo, the text comes back
  /quit        leave (so does end of input)

Everything received is printed as it arrives. A login of the same user
elsewhere kicks this one.

It connects over TCP to --gate, or over WebSocket to --ws (a gate's
--ws-listen endpoint, ws:// or wss://), or over KCP to --kcp (a gate's
--kcp-listen address).`,
		Example: `  zcluster chat --gate 127.0.0.1:18001 --user alice
  zcluster chat --ws ws://127.0.0.1:18301/ws --user bob`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.runChatTo(cmd.Context(), ep, user)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&ep.gate, "gate", "127.0.0.1:18001", "client address of a gate, host:port")
	fs.StringVar(&ep.ws, "ws", "", "join over WebSocket instead: a gate's endpoint URL, ws://host:port/ws or wss://...")
	fs.StringVar(&ep.kcp, "kcp", "", "join over KCP instead: a gate's --kcp-listen address, host:port")
	fs.StringVar(&user, "user", "", "user name to log in as, 1-64 bytes (required)")
	annotateEnv(fs)
	return cmd
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

// chatEndpoint is where `zcluster chat` connects: a TCP address, or a
// WebSocket URL, or a KCP address.
type chatEndpoint struct{ gate, ws, kcp string }

// dial connects to the endpoint; where names it for error lines.
func (e chatEndpoint) dial(ctx context.Context) (conn *zclient.Conn, where string, err error) {
	switch {
	case e.ws != "" && e.kcp != "":
		return nil, "", errors.New("--ws and --kcp: choose one")
	case e.ws != "":
		if !strings.HasPrefix(e.ws, "ws://") && !strings.HasPrefix(e.ws, "wss://") {
			return nil, "", fmt.Errorf("--ws %q: want a ws:// or wss:// URL", e.ws)
		}
		conn, err = zclient.DialWS(ctx, e.ws, zclient.WSOptions{})
		return conn, "websocket " + e.ws, err
	case e.kcp != "":
		conn, err = zclient.DialKCP(ctx, e.kcp)
		return conn, "kcp " + e.kcp, err
	}
	conn, err = zclient.Dial(ctx, e.gate)
	return conn, e.gate, err
}

// runChat is runChatTo over TCP.
func (c *cli) runChat(ctx context.Context, gateAddr, user string) error {
	return c.runChatTo(ctx, chatEndpoint{gate: gateAddr}, user)
}

// runChatTo logs in and runs the line client until /quit, end of input, a
// kick, or ctx ending; it fails if the gate goes away.
func (c *cli) runChatTo(ctx context.Context, ep chatEndpoint, user string) error {
	if user == "" {
		return errors.New("--user (or ZC_USER) is required")
	}
	dctx, cancel := context.WithTimeout(ctx, chatTimeout)
	defer cancel()
	conn, where, err := ep.dial(dctx)
	if where == "" {
		return err
	}
	if err != nil {
		return fmt.Errorf("gate at %s not reachable: %w", where, err)
	}
	defer conn.Close()
	if err := conn.Send(chat.MsgLogin, []byte(user)); err != nil {
		return fmt.Errorf("login: %w", err)
	}
	f, err := expect(dctx, conn, chat.MsgLogin)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	var lr chat.LoginReply
	if err := json.Unmarshal(f.Payload, &lr); err != nil {
		return fmt.Errorf("login: reply %q: %w", f.Payload, err)
	}
	if !lr.OK {
		return fmt.Errorf("login as %q refused: %s", user, lr.Error)
	}
	cancel()

	out := &syncWriter{w: c.stdout}
	out.println(fmt.Sprintf("logged in as %s on %s (session %s)", lr.User, lr.Gate, lr.Session))
	out.println(chatHelp)

	recvDone := make(chan error, 1)
	go func() { recvDone <- receive(conn, out) }()

	stop := make(chan struct{})
	defer close(stop)
	lines := make(chan string)
	go readLines(c.stdin, lines, stop)

	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-recvDone:
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

// receive prints every frame until the connection ends. It returns nil
// after a kick and an error when the gate closed the connection otherwise.
func receive(conn *zclient.Conn, out *syncWriter) error {
	for f := range conn.Frames() {
		line, kicked := renderFrame(f)
		out.println(line)
		if kicked {
			return nil
		}
	}
	return errors.New("the gate closed the connection")
}

// chatCommand is one parsed input line.
type chatCommand struct {
	msgID   uint32 // 0: nothing to send
	payload []byte
	quit    bool
	help    bool
}

// parseChatLine turns an input line into a command: "@bob hi" sends,
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
