package relay

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/zcluster/zcluster/internal/runtime/frame"
)

// Frame msgIDs on a relay link. The handshake uses 1..3, in that order,
// once; after it only FrameEnvelope frames flow (dialer -> listener).
const (
	FrameChallenge uint32 = 1  // listener -> dialer: version u8 | nonceS[32]
	FrameAuth      uint32 = 2  // dialer -> listener: version u8 | nonceC[32] | idLen u8 | nodeID | mac[32]
	FrameAccept    uint32 = 3  // listener -> dialer: idLen u8 | nodeID | mac[32]
	FrameEnvelope  uint32 = 16 // dialer -> listener: one Envelope
)

const (
	nonceLen = 32
	macLen   = sha256.Size

	challengeLen = 1 + nonceLen
	// maxAcceptLen bounds an Accept payload: the listener's node id and MAC.
	maxAcceptLen = 1 + MaxFieldLen + macLen
	// maxAuthLen bounds an Auth payload: a node id is at most 255 bytes.
	maxAuthLen = 1 + nonceLen + 1 + MaxFieldLen + macLen

	labelClient = "zc-relay-client"
	labelServer = "zc-relay-server"
)

// errPeerClosed is the handshake cause when the listener hangs up instead of
// accepting: almost always a different secret.
var errPeerClosed = errors.New("peer closed the connection (different secret?)")

// clientMAC proves the dialer knows secret; it binds the listener's fresh
// nonce, so an Auth captured from one connection is useless on another.
func clientMAC(secret, nonceS, nonceC, nodeID []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(labelClient))
	m.Write(nonceS)
	m.Write(nonceC)
	m.Write(nodeID)
	return m.Sum(nil)
}

// serverMAC proves the listener knows secret too (mutual authentication)
// and binds the node id it claims, so a dialer that reached another node
// (a stale address) finds out before it sends anything. The distinct label
// keeps it from ever equalling a client MAC.
func serverMAC(secret, nonceC, nonceS, nodeID []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(labelServer))
	m.Write(nonceC)
	m.Write(nonceS)
	m.Write(nodeID)
	return m.Sum(nil)
}

// buildAccept returns the Accept payload of the listener nodeID.
func buildAccept(secret, nonceC, nonceS, nodeID []byte) []byte {
	p := make([]byte, 0, 1+len(nodeID)+macLen)
	p = append(p, byte(len(nodeID)))
	p = append(p, nodeID...)
	return append(p, serverMAC(secret, nonceC, nonceS, nodeID)...)
}

// newNonce fills a fresh random nonce.
func newNonce() ([]byte, error) {
	n := make([]byte, nonceLen)
	if _, err := rand.Read(n); err != nil {
		return nil, err
	}
	return n, nil
}

// authMsg is a parsed Auth payload; its slices alias the frame.
type authMsg struct {
	nonceC []byte
	nodeID []byte
	mac    []byte
	proof  []byte // certificate proof, relay TLS only (identity.go)
}

// parseAuth checks the Auth layout; it does not verify the MAC nor the
// certificate proof, which is whatever follows the MAC (relay TLS only).
func parseAuth(p []byte) (authMsg, error) {
	if len(p) < 1+nonceLen+1 || p[0] != Version {
		return authMsg{}, errors.New("bad auth header")
	}
	idLen := int(p[1+nonceLen])
	base := 1 + nonceLen + 1 + idLen + macLen
	if idLen == 0 || len(p) < base {
		return authMsg{}, errors.New("bad auth length")
	}
	idOff := 1 + nonceLen + 1
	return authMsg{
		nonceC: p[1 : 1+nonceLen],
		nodeID: p[idOff : idOff+idLen],
		mac:    p[idOff+idLen : base],
		proof:  p[base:],
	}, nil
}

// buildAuth returns the Auth payload answering nonceS.
func buildAuth(secret, nonceS, nonceC, nodeID []byte) []byte {
	p := make([]byte, 0, 1+nonceLen+1+len(nodeID)+macLen)
	p = append(p, Version)
	p = append(p, nonceC...)
	p = append(p, byte(len(nodeID)))
	p = append(p, nodeID...)
	return append(p, clientMAC(secret, nonceS, nonceC, nodeID)...)
}

// readFrame reads one whole handshake frame from a plain connection,
// refusing payloads longer than max.
func readFrame(r io.Reader, max int) (uint32, []byte, error) {
	var h [frame.HeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	id := binary.BigEndian.Uint32(h[0:4])
	n := binary.BigEndian.Uint32(h[4:8])
	if uint64(n) > uint64(max) {
		return id, nil, fmt.Errorf("frame %d declares %d bytes, handshake limit %d", id, n, max)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return id, nil, err
	}
	return id, p, nil
}

// clientHandshake runs the dialer's side on conn, whose deadline the caller
// has set: read Challenge, send Auth, verify Accept and that the listener is
// the node wantPeer. The error is the bare cause; the caller wraps it.
//
// With relay TLS (tlsCfg not nil), conn is the *tls.Conn: the Auth carries
// this node's certificate proof and the listener's certificate must name
// the node id it answers with.
func clientHandshake(conn net.Conn, secret, nodeID, wantPeer []byte, tlsCfg *TLSConfig) error {
	id, p, err := readFrame(conn, challengeLen)
	if err != nil {
		return fmt.Errorf("reading challenge: %w", err)
	}
	if id != FrameChallenge || len(p) != challengeLen || p[0] != Version {
		return fmt.Errorf("unexpected frame %d (%d bytes) instead of a version %d challenge", id, len(p), Version)
	}
	nonceS := p[1:]
	nonceC, err := newNonce()
	if err != nil {
		return err
	}
	auth := buildAuth(secret, nonceS, nonceC, nodeID)
	if tlsCfg != nil {
		if auth, err = appendProof(auth, &tlsCfg.cert, nonceS, nonceC, nodeID); err != nil {
			return err
		}
	}
	if _, err := conn.Write(frame.Append(nil, FrameAuth, auth)); err != nil {
		return fmt.Errorf("sending auth: %w", err)
	}
	id, p, err = readFrame(conn, maxAcceptLen)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || isReset(err) {
			return errPeerClosed
		}
		return fmt.Errorf("reading accept: %w", err)
	}
	if id != FrameAccept || len(p) < 1 || len(p) != 1+int(p[0])+macLen {
		return fmt.Errorf("unexpected frame %d (%d bytes) instead of accept", id, len(p))
	}
	peer, mac := p[1:1+int(p[0])], p[1+int(p[0]):]
	if !hmac.Equal(mac, serverMAC(secret, nonceC, nonceS, peer)) {
		return errors.New("peer failed to prove the secret")
	}
	if string(peer) != string(wantPeer) {
		return fmt.Errorf("%w: reached node %q", ErrWrongPeer, peer)
	}
	if tc, ok := conn.(*tls.Conn); ok && tlsCfg != nil {
		certs := tc.ConnectionState().PeerCertificates
		if len(certs) == 0 || !certNames(certs[0], string(peer)) {
			var cn string
			var dns []string
			if len(certs) > 0 {
				cn, dns = certs[0].Subject.CommonName, certs[0].DNSNames
			}
			return fmt.Errorf("%w: %q presented a certificate (CN %q, DNS %v) that does not name it", ErrIdentity, peer, cn, dns)
		}
	}
	return nil
}

// isReset reports a connection reset by the peer.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
