package relay

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"

	"github.com/zcluster/zcluster/internal/runtime/tlsutil"
)

// ErrTLSConfig is returned by New when Config.TLS cannot be used: a
// certificate without its key, an unreadable file, a CA file with no
// certificate.
var ErrTLSConfig = errors.New("relay: bad TLS config")

// TLSConfig puts every relay link under TLS, on top of (not instead of) the
// secret handshake: TLS keeps the traffic private and proves the listener's
// certificate; the handshake still proves that both ends hold the cluster
// secret. All nodes of a cluster use TLS or none does: a TLS dialer cannot
// talk to a plain listener, nor the other way round.
type TLSConfig struct {
	// CertFile and KeyFile (PEM) are the certificate this node's relay
	// listener presents. Required.
	CertFile, KeyFile string
	// CAFile (PEM) holds the CA certificates peers' certificates must chain
	// to; "" means the system roots.
	CAFile string
	// RootCAs, if set, is used instead of CAFile.
	RootCAs *x509.CertPool
	// ServerName is the name checked in every peer's certificate; "" checks
	// the host of the peer's relay address (so certificates must carry the
	// advertised IP or name). One name shared by all nodes lets one
	// certificate serve the whole cluster.
	ServerName string

	client *tls.Config     // built by prepare
	cert   tls.Certificate // this node's, loaded by prepare
	roots  *x509.CertPool  // peers' certificates chain to these; nil: system roots
}

// checkOwnName refuses a certificate that does not name this node's id:
// peers would refuse every link with it (see identity.go).
func (t *TLSConfig) checkOwnName(nodeID string) error {
	leaf := t.cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(t.cert.Certificate[0]); err != nil {
			return fmt.Errorf("%w: %w", ErrTLSConfig, err)
		}
	}
	if !certNames(leaf, nodeID) {
		return fmt.Errorf("%w: the relay certificate %s (CN %q, DNS %v) does not name this node's id %q: with relay TLS each node's certificate must carry its node id as a DNS name or the CN", ErrTLSConfig, t.CertFile, leaf.Subject.CommonName, leaf.DNSNames, nodeID)
	}
	return nil
}

// prepare checks t and returns a copy with the dialer's config built.
func (t *TLSConfig) prepare() (*TLSConfig, error) {
	if t.CertFile == "" || t.KeyFile == "" {
		return nil, fmt.Errorf("%w: both a certificate and a key file are needed (cert %q, key %q)", ErrTLSConfig, t.CertFile, t.KeyFile)
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTLSConfig, err)
	}
	c := *t
	c.cert = cert
	c.client = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, RootCAs: t.RootCAs}
	if c.RootCAs == nil && t.CAFile != "" {
		pool, err := tlsutil.CAPool(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrTLSConfig, err)
		}
		c.client.RootCAs = pool
	}
	c.roots = c.client.RootCAs
	return &c, nil
}

// listenFiles returns the certificate files for the relay listener, or ""
// when TLS is off.
func (c Config) listenFiles() (cert, key string) {
	if c.TLS == nil {
		return "", ""
	}
	return c.TLS.CertFile, c.TLS.KeyFile
}

// secure runs the TLS client handshake on a freshly dialed link when TLS is
// on; conn's deadline (set by the caller) bounds it. On error it returns
// conn itself, for the caller to close.
func (r *Relay) secure(conn net.Conn, addr string) (net.Conn, error) {
	if r.cfg.TLS == nil {
		return conn, nil
	}
	cfg := r.cfg.TLS.client
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(r.ctx); err != nil {
		return conn, fmt.Errorf("tls: %w", err)
	}
	return tc, nil
}
