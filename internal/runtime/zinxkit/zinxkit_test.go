package zinxkit

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zcluster/zcluster/internal/runtime/frame"
	"github.com/zcluster/zcluster/internal/runtime/tlsutil"
)

// echoHandler answers every frame with the same msgID and payload.
type echoHandler struct{}

func (echoHandler) OnOpen(*Conn)  {}
func (echoHandler) OnClose(*Conn) {}
func (echoHandler) OnFrame(c *Conn, id uint32, p []byte) {
	_ = c.Send(id, append([]byte(nil), p...))
}

func roundTrip(t *testing.T, nc net.Conn) error {
	t.Helper()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write(frame.Append(nil, 7, []byte("hello"))); err != nil {
		return err
	}
	var hdr [frame.HeaderLen + 5]byte
	if _, err := io.ReadFull(nc, hdr[:]); err != nil {
		return err
	}
	if binary.BigEndian.Uint32(hdr[:]) != 7 || string(hdr[frame.HeaderLen:]) != "hello" {
		t.Fatalf("echo %x", hdr)
	}
	return nil
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestTLSAndPlainServers: a TLS server and a plain server live in one
// process, each with its own setting, started in either order.
func TestTLSAndPlainServers(t *testing.T) {
	ca, err := tlsutil.NewTestCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue("srv", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	plain1, err := Listen(Config{Name: "plain1", Addr: "127.0.0.1:0", Logger: quiet()}, echoHandler{})
	if err != nil {
		t.Fatal(err)
	}
	defer plain1.Stop()
	secure, err := Listen(Config{Name: "tls", Addr: "127.0.0.1:0", Logger: quiet(), CertFile: cert, KeyFile: key}, echoHandler{})
	if err != nil {
		t.Fatal(err)
	}
	defer secure.Stop()
	plain2, err := Listen(Config{Name: "plain2", Addr: "127.0.0.1:0", Logger: quiet()}, echoHandler{})
	if err != nil {
		t.Fatal(err)
	}
	defer plain2.Stop()

	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", secure.Addr(), &tls.Config{RootCAs: ca.Pool})
	if err != nil {
		t.Fatalf("TLS dial: %v", err)
	}
	defer tc.Close()
	if err := roundTrip(t, tc); err != nil {
		t.Fatalf("TLS round trip: %v", err)
	}
	for _, s := range []*Server{plain1, plain2} {
		nc, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := roundTrip(t, nc); err != nil {
			t.Fatalf("plain round trip on %s: %v", s.Addr(), err)
		}
		_ = nc.Close()
	}
	// Plaintext on the TLS server is closed without an answer.
	nc, err := net.DialTimeout("tcp", secure.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := roundTrip(t, nc); err == nil {
		t.Fatal("plaintext round trip on the TLS server worked")
	}
}

func TestTLSConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []Config{
		{CertFile: bad},
		{KeyFile: bad},
		{CertFile: bad, KeyFile: bad},
		{CertFile: filepath.Join(dir, "missing.pem"), KeyFile: bad},
	} {
		cfg.Addr, cfg.Logger = "127.0.0.1:0", quiet()
		if s, err := Listen(cfg, echoHandler{}); !errors.Is(err, ErrTLS) {
			if s != nil {
				s.Stop()
			}
			t.Fatalf("cert %q key %q: err %v, want ErrTLS", cfg.CertFile, cfg.KeyFile, err)
		}
	}
}

// TestTLSHandshakeTimeout: a connection that never completes the TLS
// handshake is closed after Config.HandshakeTimeout.
func TestTLSHandshakeTimeout(t *testing.T) {
	ca, err := tlsutil.NewTestCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue("srv", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	var opened atomic.Int32
	s, err := Listen(Config{Name: "tls", Addr: "127.0.0.1:0", Logger: quiet(), CertFile: cert, KeyFile: key,
		HandshakeTimeout: 300 * time.Millisecond}, countOpens{&opened})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	// Listen's own probe completed the handshake (Listen returned) and is
	// kept from the handler.
	time.Sleep(100 * time.Millisecond)
	if n := opened.Load(); n != 0 {
		t.Fatalf("handler saw %d connections, want none (the probe is not a client)", n)
	}
	nc, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	start := time.Now()
	_ = nc.SetReadDeadline(start.Add(5 * time.Second))
	if _, err := io.ReadAll(nc); err != nil {
		t.Fatalf("silent TLS client not closed: %v", err)
	}
	t.Logf("silent client closed after %v", time.Since(start).Round(time.Millisecond))
	if n := opened.Load(); n != 0 {
		t.Fatalf("handler saw %d connections that never completed TLS", n)
	}
}

type countOpens struct{ n *atomic.Int32 }

func (c countOpens) OnOpen(*Conn)                { c.n.Add(1) }
func (countOpens) OnClose(*Conn)                 {}
func (countOpens) OnFrame(*Conn, uint32, []byte) {}
