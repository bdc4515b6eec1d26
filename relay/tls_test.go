package relay

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zcluster/zcluster/internal/tlsutil"
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
	cert, key := issue(t, ca, "node", "127.0.0.1")
	named, namedKey := issue(t, ca, "named", "zc-relay")
	cases := []struct {
		name   string
		tls    *TLSConfig
		wantOK bool
	}{
		{"ip-san", &TLSConfig{CertFile: cert, KeyFile: key, CAFile: ca.CAFile}, true},
		{"server-name", &TLSConfig{CertFile: named, KeyFile: namedKey, RootCAs: ca.Pool, ServerName: "zc-relay"}, true},
		{"name-mismatch", &TLSConfig{CertFile: named, KeyFile: namedKey, RootCAs: ca.Pool}, false},
		{"untrusted-ca", &TLSConfig{CertFile: cert, KeyFile: key, RootCAs: newTestCA(t).Pool}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := &directory{}
			var got sink
			a := testConfig("a", "s", dir)
			a.TLS = tc.tls
			b := testConfig("b", "s", dir)
			b.TLS = tc.tls
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
	cert, key := issue(t, ca, "node", "127.0.0.1")
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
	cert, key := issue(t, ca, "node", "127.0.0.1")
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
	} {
		cfg := testConfig("n", "s", &directory{})
		cfg.TLS = &tc
		if _, err := New(cfg, nil); !errors.Is(err, ErrTLSConfig) {
			t.Fatalf("%+v: %v, want ErrTLSConfig", tc, err)
		}
	}
}
