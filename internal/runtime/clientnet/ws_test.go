package clientnet

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/zcluster/zcluster/internal/runtime/frame"
)

func TestOriginAllowed(t *testing.T) {
	for _, tc := range []struct {
		allowed []string
		host    string // the Host the client dialled
		origin  string
		want    bool
	}{
		{nil, "gate.example.com:18301", "", true}, // not a browser
		{nil, "gate.example.com:18301", "https://gate.example.com", true},
		{nil, "gate.example.com:18301", "http://gate.example.com:9100", true},
		{nil, "GATE.example.com:18301", "http://gate.EXAMPLE.com", true},
		{nil, "gate.example.com:18301", "https://evil.example", false},
		{nil, "gate.example.com:18301", "null", false},
		{nil, "[::1]:18301", "http://[::1]:9100", true},
		{nil, "127.0.0.1:18301", "http://localhost:9100", false},
		{[]string{"*"}, "gate.example.com", "https://evil.example", true},
		{[]string{"https://game.example.com"}, "gate", "https://game.example.com", true},
		{[]string{"https://game.example.com/"}, "gate", "https://game.example.com", true},
		{[]string{"https://game.example.com"}, "gate", "http://game.example.com", false},
		{[]string{"https://game.example.com"}, "gate", "https://game.example.com:8443", false},
		{[]string{"play.example.org"}, "gate", "https://play.example.org:8443", true},
		{[]string{"play.example.org:8443"}, "gate", "https://play.example.org:8443", true},
		{[]string{"play.example.org:8443"}, "gate", "https://play.example.org", false},
		{[]string{"play.example.org"}, "play.example.org", "https://other.example.org", false},
	} {
		r := httptest.NewRequest("GET", "/ws", nil)
		r.Host = tc.host
		if tc.origin != "" {
			r.Header.Set("Origin", tc.origin)
		}
		if got := originAllowed(tc.allowed, r); got != tc.want {
			t.Errorf("origins %v, host %s, Origin %q: allowed %v, want %v", tc.allowed, tc.host, tc.origin, got, tc.want)
		}
	}
}

func TestCheckFrames(t *testing.T) {
	one := frame.Append(nil, 4, []byte("hello"))
	two := frame.Append(append([]byte(nil), one...), 5, nil)
	for _, tc := range []struct {
		name   string
		msg    []byte
		code   int
		reason string
	}{
		{"one frame", one, 0, ""},
		{"two frames", two, 0, ""},
		{"empty payload frame", frame.Append(nil, 9, nil), 0, ""},
		{"empty message", nil, closeProtocol, "empty message"},
		{"short header", one[:5], closeInvalid, "split across messages"},
		{"short payload", one[:len(one)-1], closeInvalid, "split across messages"},
		{"whole then partial", append(append([]byte(nil), one...), one[:9]...), closeInvalid, "split across messages"},
		{"over the limit", frame.Append(nil, 4, make([]byte, 101)), closeTooBig, "over the limit 100"},
	} {
		code, reason := checkFrames(tc.msg, 100)
		if code != tc.code || !strings.Contains(reason, tc.reason) {
			t.Errorf("%s: %d %q, want %d %q", tc.name, code, reason, tc.code, tc.reason)
		}
	}
}

func TestReadMessageLimit(t *testing.T) {
	got, err := readMessage(strings.NewReader(strings.Repeat("x", 100)), nil, 100)
	if err != nil || len(got) != 100 {
		t.Fatalf("100 bytes at limit 100: %d bytes, %v", len(got), err)
	}
	if _, err := readMessage(strings.NewReader(strings.Repeat("x", 101)), nil, 100); err != errMessageTooBig {
		t.Fatalf("101 bytes at limit 100: %v", err)
	}
	buf := make([]byte, 0, 8)
	got, err = readMessage(strings.NewReader("abcdefghijkl"), buf, 100)
	if err != nil || string(got) != "abcdefghijkl" {
		t.Fatalf("growing a small buffer: %q %v", got, err)
	}
}
