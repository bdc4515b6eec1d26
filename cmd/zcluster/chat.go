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
	"github.com/zcluster/zcluster/internal/zclient"
	"github.com/zcluster/zcluster/protocol"
	"github.com/zcluster/zcluster/relay"
)

// chatTimeout bounds dialling the gate.
const chatTimeout = 5 * time.Second

// loginAnswerTimeout bounds the wait for the answer to the login: a gate
// answers at once; something else on the port may never answer.
const loginAnswerTimeout = 3 * time.Second

const chatHelp = "commands: @user text (send to user) | /all text (broadcast) | /echo text (chain-echo via im and echo) | /quit"

func newChatCmd(c *cli) *cobra.Command {
	var gateAddr, user string
	var prompt bool
	cmd := &cobra.Command{
		Use:   "chat",
		Short: "Chat through a gate running the chat app: an interactive line client",
		Long: `chat connects to a gate, logs in as --user and reads commands from stdin:

  @bob hi      send "hi" to bob, on whichever gate he is
  /all text    broadcast to every logged-in user
  /echo text   chain-echo: im asks echo, the text comes back
  /quit        leave (so does end of input)

Everything received is printed as it arrives; a send that was delivered
prints nothing, one that was not prints why. A login of the same user
elsewhere kicks this one. On a terminal a prompt shows the user and the
gate ("alice@gate-1> "); --prompt=false turns it off, --prompt turns it on
for piped input.`,
		Example: "  zcluster chat --gate 127.0.0.1:18001 --user alice",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("prompt") {
				prompt = isTerminal(c.stdin)
			}
			return c.runChat(cmd.Context(), gateAddr, user, prompt)
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&prompt, "prompt", false, "show a \"user@gate> \" prompt (default: when stdin is a terminal)")
	fs.StringVar(&gateAddr, "gate", "127.0.0.1:18001", "client address of a gate, host:port")
	fs.StringVar(&user, "user", "", "user name to log in as, 1-64 bytes (required)")
	annotateEnv(fs)
	return cmd
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

// showPrompt writes the prompt unless it is already the last thing written.
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

// runChat logs in and runs the line client until /quit, end of input, a
// kick, or ctx ending; it fails if the gate goes away.
func (c *cli) runChat(ctx context.Context, gateAddr, user string, prompt bool) error {
	if user == "" {
		return errors.New("--user (or ZC_USER) is required")
	}
	dctx, cancel := context.WithTimeout(ctx, chatTimeout)
	defer cancel()
	conn, err := zclient.Dial(dctx, gateAddr)
	if err != nil {
		return fmt.Errorf("gate at %s not reachable: %w", gateAddr, err)
	}
	defer conn.Close()
	lr, err := chatLogin(ctx, conn, gateAddr, user)
	if err != nil {
		return err
	}

	out := &syncWriter{w: c.stdout}
	out.println(fmt.Sprintf("logged in as %s on %s (session %s)", lr.User, lr.Gate, lr.Session))
	out.println(chatHelp)
	if prompt {
		out.mu.Lock()
		out.prompt = lr.User + "@" + lr.Gate + "> "
		out.mu.Unlock()
		out.showPrompt()
	}

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

// chatLogin logs in as user and returns the gate's answer. Whatever else
// listens on the port gets a one-line reason: a zcluster relay port (it
// greets with its handshake challenge), a service that answers something
// other than a login reply, or one that never answers.
func chatLogin(ctx context.Context, conn *zclient.Conn, addr, user string) (chat.LoginReply, error) {
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
			return lr, fmt.Errorf("%s closed the connection without answering the login (is it a zcluster gate?)", addr)
		}
		switch f.MsgID {
		case chat.MsgLogin:
			if err := json.Unmarshal(f.Payload, &lr); err != nil || (!lr.OK && lr.Error == "") {
				// A relay listener greets every connection with its
				// handshake challenge (relay.FrameChallenge is msgID 1
				// too): version byte, 32-byte nonce.
				if f.MsgID == relay.FrameChallenge && len(f.Payload) == 33 && f.Payload[0] == relay.Version {
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
		}
		if f.MsgID != chat.MsgKick && f.MsgID != chat.MsgError && f.MsgID != protocol.MsgHeartbeat {
			return lr, fmt.Errorf("%s is not a zcluster gate running the chat app: it answered the login with msgID %d %q", addr, f.MsgID, clip(f.Payload, 40))
		}
	}
}

// clip returns at most n bytes of b, with "..." when cut.
func clip(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "..."
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
		if line != "" {
			out.println(line)
		}
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
