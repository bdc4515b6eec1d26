package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/internal/tools/zclient"
)

// lockedBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// testLog logs warnings and errors to stderr (not t.Log: a node may still
// log from a goroutine as the test ends).
func testLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// testCLI returns a cli writing to out, logging warnings to stderr.
func testCLI(out io.Writer) *cli {
	return &cli{stdin: strings.NewReader(""), stdout: out, stderr: os.Stderr, logLevel: "warn", log: testLog()}
}

// TestDemoTour runs the demo the way `zcluster demo --once` does and
// requires every step of the tour to pass.
func TestDemoTour(t *testing.T) {
	var out lockedBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	results, err := testCLI(&out).runDemo(ctx, demoOptions{once: true, gates: 2})
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 9 {
		t.Fatalf("%d steps, want 9", len(results))
	}
	for _, r := range results {
		if r.Err != nil {
			t.Errorf("%s", r)
		}
	}
	if !strings.Contains(out.String(), "tour: 9/9 passed\n") {
		t.Errorf("no summary line in output")
	}
}

// TestChat drives `zcluster chat` against a demo cluster: it logs in, sends
// to a user on the other gate, runs a chain-echo, and is kicked by a second
// login of the same user.
func TestChat(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	d, err := startDemo(ctx, demoOptions{gates: 2}, io.Discard, testLog())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := d.close(); err != nil {
			t.Error(err)
		}
	}()
	g1, g2 := tourGate{d.gates[0].ID(), d.gates[0].ClientAddr()}, tourGate{d.gates[1].ID(), d.gates[1].ClientAddr()}

	bob, err := dialGate(ctx, g2)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	if _, err := loginAs(ctx, bob, "bob", g2.ID); err != nil {
		t.Fatal(err)
	}

	stdin, typing := io.Pipe()
	defer typing.Close()
	var out lockedBuffer
	c := testCLI(&out)
	c.stdin = stdin
	done := make(chan error, 1)
	go func() { done <- c.runChat(ctx, chatOptions{gates: []string{g1.Addr}, user: "alice", prompt: true}) }()

	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(out.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("chat output has no %q:\n%s", want, out.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("logged in as alice on " + g1.ID)
	waitFor("alice@" + g1.ID + "> ")
	if _, err := io.WriteString(typing, "@bob hi there\n"); err != nil {
		t.Fatal(err)
	}
	var m chat.Message
	if err := expectJSON(ctx, bob, chat.MsgDelivered, &m); err != nil || m != (chat.Message{From: "alice", Text: "hi there"}) {
		t.Fatalf("bob got %+v (%v)", m, err)
	}
	_ = sendJSON(bob, chat.MsgSend, chat.SendRequest{To: "alice", Text: "hello alice"})
	waitFor("[bob] hello alice\n")
	_, _ = io.WriteString(typing, "/echo around\n@carol hm\n")
	waitFor("echo: around\n")
	waitFor("carol is offline\n")
	// The replies to alice's sends come back in order: the one to
	// "@bob hi there" came before "carol is offline", and printed nothing.
	if regexp.MustCompile(`(^|\n|\[K)sent\n`).MatchString(out.String()) {
		t.Errorf("chat printed a line for a delivered send:\n%s", out.String())
	}

	// A second login of alice kicks the chat client, which then exits 0.
	alice2, err := dialGate(ctx, g2)
	if err != nil {
		t.Fatal(err)
	}
	defer alice2.Close()
	if _, err := loginAs(ctx, alice2, "alice", g2.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("chat after a kick: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("chat did not exit after the kick")
	}
	waitFor("kicked: ")
}

func TestParseChatLine(t *testing.T) {
	for _, tc := range []struct {
		line    string
		msgID   uint32
		payload string
		quit    bool
		help    bool
	}{
		{line: "@bob hi there", msgID: chat.MsgSend, payload: `{"to":"bob","text":"hi there"}`},
		{line: "/all hello all", msgID: chat.MsgBroadcast, payload: "hello all"},
		{line: "/echo x y", msgID: chat.MsgChainEcho, payload: "x y"},
		{line: " /quit ", quit: true},
		{line: ""},
		{line: "@bob", help: true},
		{line: "/all", help: true},
		{line: "hello", help: true},
	} {
		got := parseChatLine(tc.line)
		if got.msgID != tc.msgID || string(got.payload) != tc.payload || got.quit != tc.quit || got.help != tc.help {
			t.Errorf("parseChatLine(%q) = %+v", tc.line, got)
		}
	}
}

func TestRenderFrame(t *testing.T) {
	js := func(v any) []byte { b, _ := json.Marshal(v); return b }
	for _, tc := range []struct {
		f      zclient.Frame
		want   string
		kicked bool
	}{
		{zclient.Frame{MsgID: chat.MsgDelivered, Payload: js(chat.Message{From: "bob", Text: "hi"})}, "[bob] hi", false},
		{zclient.Frame{MsgID: chat.MsgBroadcasted, Payload: js(chat.Message{From: "alice", Text: "hello"})}, "[all] alice: hello", false},
		{zclient.Frame{MsgID: chat.MsgChainEcho, Payload: []byte("text")}, "echo: text", false},
		{zclient.Frame{MsgID: chat.MsgSend, Payload: js(chat.SendReply{OK: true})}, "", false},
		{zclient.Frame{MsgID: chat.MsgSend, Payload: js(chat.SendReply{Error: "bob is offline"})}, "bob is offline", false},
		{zclient.Frame{MsgID: chat.MsgError, Payload: []byte(`{"msg_id":2,"error":"not logged in"}`)}, "error: not logged in", false},
		{zclient.Frame{MsgID: chat.MsgKick, Payload: []byte(`{"reason":"logged in elsewhere"}`)}, "kicked: logged in elsewhere", true},
		{zclient.Frame{MsgID: 42, Payload: []byte("?")}, "msgID 42: ?", false},
	} {
		got, kicked := renderFrame(tc.f)
		if got != tc.want || kicked != tc.kicked {
			t.Errorf("renderFrame(%d %s) = %q, %v; want %q, %v", tc.f.MsgID, tc.f.Payload, got, kicked, tc.want, tc.kicked)
		}
	}
}

// TestChatResumesAfterReconnect: `zcluster chat` prints reliable messages
// stored while it was away; when its gate stops it logs in on the next
// gate of --gate and resumes after the last message it printed: nothing
// missed, nothing twice.
func TestChatResumesAfterReconnect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	d, err := startDemo(ctx, demoOptions{gates: 2}, io.Discard, testLog())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := d.close(); err != nil {
			t.Error(err)
		}
	}()
	g1, g2 := tourGate{d.gates[0].ID(), d.gates[0].ClientAddr()}, tourGate{d.gates[1].ID(), d.gates[1].ClientAddr()}
	bob, err := dialGate(ctx, g2)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	if _, err := loginAs(ctx, bob, "bob", g2.ID); err != nil {
		t.Fatal(err)
	}
	rsend := func(text string) chat.ReliableReply {
		t.Helper()
		_ = sendJSON(bob, chat.MsgReliable, chat.SendRequest{To: "alice", Text: text})
		var r chat.ReliableReply
		if err := expectJSON(ctx, bob, chat.MsgReliable, &r); err != nil || !r.OK {
			t.Fatalf("reliable send %q: %+v %v", text, r, err)
		}
		return r
	}
	if r := rsend("before you came"); !r.Queued {
		t.Fatalf("alice is offline, want queued: %+v", r)
	}

	stdin, typing := io.Pipe()
	defer typing.Close()
	var out lockedBuffer
	c := testCLI(&out)
	c.stdin = stdin
	done := make(chan error, 1)
	go func() {
		done <- c.runChat(ctx, chatOptions{gates: []string{g1.Addr, g2.Addr}, user: "alice", reconnect: 10 * time.Second})
	}()
	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(out.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("chat output has no %q:\n%s", want, out.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("[bob] before you came (sent while you were away)\n")
	rsend("live one")
	waitFor("[bob] live one\n")

	// alice's gate stops; bob keeps writing to her.
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	_ = d.gates[0].Shutdown(sctx)
	scancel()
	rsend("while you moved")
	waitFor("logged in again as alice on " + g2.ID)
	waitFor("[bob] while you moved")
	rsend("after the move")
	waitFor("[bob] after the move\n")
	_, _ = io.WriteString(typing, "/quit\n")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("chat: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("chat did not exit on /quit")
	}
	for _, m := range []string{"before you came", "live one", "while you moved", "after the move"} {
		if n := strings.Count(out.String(), "] "+m); n != 1 {
			t.Errorf("%q printed %d times:\n%s", m, n, out.String())
		}
	}
}

// TestChatOverWebSocket: `zcluster chat --ws URL` joins the demo through a
// gate's WebSocket endpoint and chats with a TCP user on the other gate;
// the demo serves the chat page.
func TestChatOverWebSocket(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	var started lockedBuffer
	d, err := startDemo(ctx, demoOptions{gates: 2}, &started, testLog())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := d.close(); err != nil {
			t.Error(err)
		}
	}()
	if !strings.Contains(started.String(), "chat page: http://127.0.0.1:") || !strings.Contains(started.String(), "websocket ws://127.0.0.1:") {
		t.Errorf("demo output names no chat page or websocket URL:\n%s", started.String())
	}
	resp, err := http.Get(d.pageURL() + "endpoints.json")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), d.gates[1].WSURL()) {
		t.Errorf("endpoints.json %s lacks %s", body, d.gates[1].WSURL())
	}

	g2 := tourGate{d.gates[1].ID(), d.gates[1].ClientAddr()}
	bob, err := dialGate(ctx, g2)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	if _, err := loginAs(ctx, bob, "bob", g2.ID); err != nil {
		t.Fatal(err)
	}
	stdin, typing := io.Pipe()
	defer typing.Close()
	var out lockedBuffer
	c := testCLI(&out)
	c.stdin = stdin
	done := make(chan error, 1)
	go func() { done <- c.runChat(ctx, chatOptions{gates: []string{d.gates[0].WSURL()}, user: "alice"}) }()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "logged in as alice on "+d.gates[0].ID()) {
		if time.Now().After(deadline) {
			t.Fatalf("chat --ws did not log in:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := io.WriteString(typing, "@bob hi over websocket\n"); err != nil {
		t.Fatal(err)
	}
	var m chat.Message
	if err := expectJSON(ctx, bob, chat.MsgDelivered, &m); err != nil || m != (chat.Message{From: "alice", Text: "hi over websocket"}) {
		t.Fatalf("bob got %+v (%v)", m, err)
	}
	_, _ = io.WriteString(typing, "/quit\n")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("chat --ws: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("chat --ws did not exit on /quit")
	}
}
