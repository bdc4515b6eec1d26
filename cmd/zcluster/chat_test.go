package main

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/zcluster/zcluster/internal/runtime/frame"
	"github.com/zcluster/zcluster/relay"
)

// silentService accepts connections, reads whatever comes and never
// answers, like a service that is not zinx at all.
func silentService(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); _ = c.Close() }()
		}
	}()
	return l.Addr().String()
}

// lossyRelay behaves like a relay listener whose greeting is lost: a client
// that sends first is cut off with nothing; one that waits gets the relay
// handshake challenge.
func lossyRelay(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				if n, _ := c.Read(make([]byte, 1)); n > 0 {
					return
				}
				challenge := append([]byte{relay.Version}, make([]byte, 32)...)
				_, _ = c.Write(frame.Append(nil, relay.FrameChallenge, challenge))
				time.Sleep(time.Second)
			}()
		}
	}()
	return l.Addr().String()
}

// TestChatWrongPort: `zcluster chat` pointed at a relay port, at a service
// that never answers and at one that answers something else fails quickly
// with one line saying what it found, instead of a JSON error or a long
// wait.
func TestChatWrongPort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, err := startDemo(ctx, demoOptions{gates: 2}, io.Discard, testLog())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = d.close() }()

	chatTo := func(addr string) (time.Duration, error) {
		c := testCLI(io.Discard)
		start := time.Now()
		err := c.runChat(ctx, chatOptions{gates: []string{addr}, user: "zed"})
		return time.Since(start), err
	}

	relayAddr := d.gates[0].RelayAddr()
	took, err := chatTo(relayAddr)
	if err == nil || !strings.Contains(err.Error(), relayAddr+" is not a zcluster gate (a relay port?)") {
		t.Errorf("chat to the relay port %s: %v, want %q", relayAddr, err, "not a zcluster gate (a relay port?)")
	}
	if took > loginAnswerTimeout {
		t.Errorf("chat to the relay port took %v", took)
	}

	// A relay whose greeting was lost when it closed on the login (it
	// happens on a loaded machine) is still recognised: chat asks again.
	lossy := lossyRelay(t)
	if _, err := chatTo(lossy); err == nil || !strings.Contains(err.Error(), "not a zcluster gate (a relay port?)") {
		t.Errorf("chat to a relay that lost its greeting: %v, want %q", err, "not a zcluster gate (a relay port?)")
	}

	silent := silentService(t)
	took, err = chatTo(silent)
	if want := "no answer from " + silent + " (is it a zcluster gate?)"; err == nil || err.Error() != want {
		t.Errorf("chat to a silent service: %v, want %q", err, want)
	}
	// loginAnswerTimeout (3s), with room for a loaded machine; the bug
	// was a 5s wait before a JSON error.
	if took > loginAnswerTimeout+2*time.Second {
		t.Errorf("chat to a silent service took %v", took)
	}

	// An HTTP server, say: the first bytes are no zinx frame it can parse.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
		_ = c.Close()
	}()
	_, err = chatTo(l.Addr().String())
	if err == nil || !strings.Contains(err.Error(), "(is it a zcluster gate?)") {
		t.Errorf("chat to an HTTP server: %v, want a reason ending in (is it a zcluster gate?)", err)
	}

	// The real gate still works.
	if _, err := chatTo(d.gates[1].ClientAddr()); err != nil {
		t.Errorf("chat to a gate with empty input: %v", err)
	}
}
