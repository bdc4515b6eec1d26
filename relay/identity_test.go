package relay

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/zcluster/zcluster/internal/runtime/frame"
)

// tlsAuth runs the dialer's side of the handshake by hand over TLS,
// claiming claimID with the secret and, if cert is set, a certificate
// proof made with it; it reports whether the listener accepted.
func tlsAuth(t *testing.T, addr string, tcfg *tls.Config, secret, claimID string, cert *tls.Certificate) bool {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, tcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	id, p, err := readFrame(c, challengeLen)
	if err != nil || id != FrameChallenge {
		t.Fatalf("challenge: %d %v", id, err)
	}
	nonceS := p[1:]
	nonceC, _ := newNonce()
	auth := buildAuth([]byte(secret), nonceS, nonceC, []byte(claimID))
	if cert != nil {
		if auth, err = appendProof(auth, cert, nonceS, nonceC, []byte(claimID)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Write(frame.Append(nil, FrameAuth, auth)); err != nil {
		t.Fatal(err)
	}
	id, _, err = readFrame(c, maxAcceptLen)
	switch {
	case err == nil && id == FrameAccept:
		return true
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err):
		return false
	default:
		t.Fatalf("after auth: frame %d, %v", id, err)
		return false
	}
}

// TestTLSNodeIdentity: with relay TLS, holding the secret is not enough to
// claim a node id: the listener accepts a dialer only with a certificate
// proof for the id it claims, and a dialer refuses a listener whose
// certificate does not name the node it answers as.
func TestTLSNodeIdentity(t *testing.T) {
	ca := newTestCA(t)
	nodeTLS := func(id string) *TLSConfig {
		cert, key := issue(t, ca, id, id, "127.0.0.1")
		return &TLSConfig{CertFile: cert, KeyFile: key, RootCAs: ca.Pool}
	}
	dir := &directory{}
	var got sink
	bcfg := testConfig("b", "s", dir)
	bcfg.TLS = nodeTLS("b")
	b := startRelay(t, bcfg, dir, got.handle)

	malCert, malKey := issue(t, ca, "mallory", "mallory", "127.0.0.1")
	mallory, err := tls.LoadX509KeyPair(malCert, malKey)
	if err != nil {
		t.Fatal(err)
	}
	aCert, aKey := issue(t, ca, "a-own", "a", "127.0.0.1")
	aPair, err := tls.LoadX509KeyPair(aCert, aKey)
	if err != nil {
		t.Fatal(err)
	}
	tcfg := &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}

	// The listener side.
	if tlsAuth(t, b.Addr(), tcfg, "s", "a", &mallory) {
		t.Fatal("mallory's certificate was accepted for node a")
	}
	if tlsAuth(t, b.Addr(), tcfg, "s", "a", nil) {
		t.Fatal("an Auth without a certificate proof was accepted under relay TLS")
	}
	if tlsAuth(t, b.Addr(), tcfg, "wrong", "a", &aPair) {
		t.Fatal("a's certificate with the wrong secret was accepted")
	}
	if !tlsAuth(t, b.Addr(), tcfg, "s", "a", &aPair) {
		t.Fatal("a's own certificate was refused")
	}
	if !tlsAuth(t, b.Addr(), tcfg, "s", "mallory", &mallory) {
		t.Fatal("mallory claiming its own id was refused")
	}
	if st := b.Stats(); st.HandshakeFailures < 3 {
		t.Fatalf("stats %+v: want the 3 refusals counted", st)
	}
	if n := len(got.snapshot()); n != 0 {
		t.Fatalf("%d envelopes delivered", n)
	}

	// The dialer side: "c"'s address answered by a listener that holds
	// the secret and says it is c, with mallory's certificate.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{mallory}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		nonceS, _ := newNonce()
		if _, err := conn.Write(frame.Append(nil, FrameChallenge, append([]byte{Version}, nonceS...))); err != nil {
			return
		}
		_, p, err := readFrame(conn, 1<<20)
		if err != nil {
			return
		}
		a, err := parseAuth(p)
		if err != nil {
			return
		}
		_, _ = conn.Write(frame.Append(nil, FrameAccept, buildAccept([]byte("s"), a.nonceC, nonceS, []byte("c"))))
		_, _ = io.Copy(io.Discard, conn)
	}()
	dir.set("c", ln.Addr().String())
	acfg := testConfig("a", "s", dir)
	acfg.TLS = &TLSConfig{CertFile: aCert, KeyFile: aKey, RootCAs: ca.Pool}
	ra := startRelay(t, acfg, dir, nil)
	err = ra.Send(ctxT(t), "c", &Envelope{Kind: KindPush, Payload: []byte("for c")})
	if !errors.Is(err, ErrHandshake) || !errors.Is(err, ErrIdentity) {
		t.Fatalf("send to an impostor of c: %v, want ErrHandshake wrapping ErrIdentity", err)
	}
}
