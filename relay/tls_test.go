package relay

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zcluster/zcluster/internal/runtime/tlsutil"
)

func newTestCA(t *testing.T) *tlsutil.TestCA {
	t.Helper()
	ca, err := tlsutil.NewTestCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *tlsutil.TestCA, name string, hosts ...string) (string, string) {
	t.Helper()
	cert, key, err := ca.Issue(name, hosts...)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func TestTLSLinks(t *testing.T) {
	ca := newTestCA(t)
	// Each node's certificate names its node id, plus where it is reached.
	byIP := func(id string) *TLSConfig {
		cert, key := issue(t, ca, id, id, "127.0.0.1")
		return &TLSConfig{CertFile: cert, KeyFile: key, CAFile: ca.CAFile}
	}
	byName := func(id string) *TLSConfig {
		cert, key := issue(t, ca, id+"-named", id, "zc-relay")
		return &TLSConfig{CertFile: cert, KeyFile: key, RootCAs: ca.Pool, ServerName: "zc-relay"}
	}
	nameMismatch := func(id string) *TLSConfig {
		cert, key := issue(t, ca, id+"-other", id, "zc-relay")
		return &TLSConfig{CertFile: cert, KeyFile: key, RootCAs: ca.Pool}
	}
	untrusted := func(id string) *TLSConfig {
		cert, key := issue(t, ca, id+"-untrusted", id, "127.0.0.1")
		return &TLSConfig{CertFile: cert, KeyFile: key, RootCAs: newTestCA(t).Pool}
	}
	cases := []struct {
		name   string
		tls    func(id string) *TLSConfig
		wantOK bool
	}{
		{"ip-san", byIP, true},
		{"server-name", byName, true},
		{"name-mismatch", nameMismatch, false},
		{"untrusted-ca", untrusted, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := &directory{}
			var got sink
			a := testConfig("a", "s", dir)
			a.TLS = tc.tls("a")
			b := testConfig("b", "s", dir)
			b.TLS = tc.tls("b")
			ra := startRelay(t, a, dir, nil)
			startRelay(t, b, dir, got.handle)
			err := ra.Send(ctxT(t), "b", &Envelope{Kind: KindPush, Session: []byte("s1"), Payload: []byte("hi")})
			if !tc.wantOK {
				if !errors.Is(err, ErrHandshake) || !strings.Contains(err.Error(), "tls") {
					t.Fatalf("send: %v, want a TLS handshake error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got.waitFor(t, 1)
			if e := got.snapshot()[0]; string(e.Source) != "a" || string(e.Payload) != "hi" {
				t.Fatalf("received %+v", e)
			}
		})
	}
}

// TestTLSMismatch: a TLS node and a plain node cannot link, either way.
func TestTLSMismatch(t *testing.T) {
	ca := newTestCA(t)
	cert, key := issue(t, ca, "sec", "sec", "127.0.0.1")
	dir := &directory{}
	sec := testConfig("sec", "s", dir)
	sec.TLS = &TLSConfig{CertFile: cert, KeyFile: key, RootCAs: ca.Pool}
	rs := startRelay(t, sec, dir, nil)
	rp := startRelay(t, testConfig("plain", "s", dir), dir, nil)
	if err := rs.Send(ctxT(t), "plain", &Envelope{Kind: KindPush}); !errors.Is(err, ErrHandshake) {
		t.Fatalf("TLS to plain: %v", err)
	}
	if err := rp.Send(ctxT(t), "sec", &Envelope{Kind: KindPush}); !errors.Is(err, ErrHandshake) {
		t.Fatalf("plain to TLS: %v", err)
	}
}

func TestTLSConfigRefused(t *testing.T) {
	ca := newTestCA(t)
	cert, key := issue(t, ca, "n", "n", "127.0.0.1")
	other, otherKey := issue(t, ca, "other", "other", "127.0.0.1")
	empty := filepath.Join(t.TempDir(), "empty.pem")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []TLSConfig{
		{CertFile: cert},
		{KeyFile: key},
		{CertFile: key, KeyFile: cert},
		{CertFile: cert, KeyFile: key, CAFile: empty},
		{CertFile: cert, KeyFile: key, CAFile: filepath.Join(t.TempDir(), "missing.pem")},
		{CertFile: other, KeyFile: otherKey, RootCAs: ca.Pool}, // does not name "n"
	} {
		cfg := testConfig("n", "s", &directory{})
		cfg.TLS = &tc
		if _, err := New(cfg, nil); !errors.Is(err, ErrTLSConfig) {
			t.Fatalf("%+v: %v, want ErrTLSConfig", tc, err)
		}
	}
}
