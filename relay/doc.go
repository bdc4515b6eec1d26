// Package relay carries zcluster's internal traffic (gate <-> backend,
// backend <-> backend) over zinx connections between the nodes' relay
// ports: a compact binary Envelope, an authenticated link per peer, and
// coalesced writes.
//
// # Links
//
// Every node runs one relay server (a zinxkit server) for inbound links and
// keeps at most one outbound link per peer it sends to: a plain net.Conn
// speaking the same zinx TLV frames, written through a frame.Writer so that
// many envelopes share one write syscall. Traffic on a link flows one way,
// dialer -> listener; an answer goes back over the answerer's own outbound
// link. Send is the only send primitive. Sending to oneself dials one's own
// server like any other peer (a loopback link), so the Handler always runs
// on an inbound link's reader goroutine.
//
// A broken outbound link is removed at once and reported to the OnLinkDown
// callbacks; the next Send re-dials. A failed dial or handshake makes Send
// return that error at once for Config.RedialBackoff instead of dialing
// again.
//
// # Frames
//
// Every frame is a zinx v1.2.8 TLV frame: msgID u32 BE | length u32 BE |
// payload. The msgIDs of a relay link:
//
//	1  Challenge  listener -> dialer  version u8 | nonceS[32]
//	2  Auth       dialer -> listener  version u8 | nonceC[32] | idLen u8 | nodeID | mac[32] [| proof]
//	3  Accept     listener -> dialer  idLen u8 | nodeID | mac[32]
//	16 Envelope   dialer -> listener  one envelope (below)
//
// # Handshake
//
// HMAC-SHA256 challenge-response, mutual, keyed by the cluster secret:
//
//  1. On accept the listener sends Challenge with a fresh random nonceS.
//  2. The dialer answers Auth with its own random nonceC, its node id and
//     HMAC(secret, "zc-relay-client" | nonceS | nonceC | nodeID).
//  3. The listener checks the MAC in constant time and answers Accept with
//     its own node id and HMAC(secret, "zc-relay-server" | nonceC | nonceS |
//     nodeID); the dialer checks the MAC, and that the id is the node it
//     meant to reach (a stale address answered by another node is refused
//     with ErrWrongPeer), before it sends anything else.
//
// Until a connection has authenticated, any frame other than one Auth
// closes it and nothing is delivered; a wrong MAC closes it; so does not
// authenticating within Config.HandshakeTimeout. An Auth captured from one
// connection fails on another, since nonceS is fresh. Once authenticated,
// the Source of every envelope received is overwritten with the peer's
// authenticated id, and a malformed envelope or a frame other than 16
// closes the link. Frames larger than Config.MaxFrame close the connection.
//
// With Config.Insecure and no secret, the handshake runs with an empty key:
// it keeps strangers that do not speak the protocol out, nothing more.
//
// With relay TLS (Config.TLS) the handshake also binds node ids to
// certificates (identity.go): the Auth ends with a proof, sigLen u16 | sig |
// count u8 | (certLen u32 | certificate DER)*, the dialer's chain and its
// signature over SHA-256("zc-relay-client-cert" | nonceS | nonceC | nodeID);
// the listener accepts it only if the chain leads to the CA, the leaf
// names nodeID (DNS SAN or CN) and the signature verifies. The dialer
// accepts the listener only if the certificate it presented in TLS names
// the node id of the Accept. Without TLS an Auth carries no proof, and a
// holder of the secret can claim any node id.
//
// # Envelope
//
// All integers big-endian; the three byte fields carry a one-byte length,
// the payload is the rest of the frame:
//
//	off  size  field
//	0    1     version (1)
//	1    1     kind (1..13, see Kind)
//	2    1     flags (FlagDone 0x01, FlagError 0x02; other bits are kept, not interpreted)
//	3    4     msgID: the client-facing msgID carried
//	7    8     seq: forward sequence or call id
//	15   1     sessLen, then sessLen bytes of session
//	.    1     userLen, then userLen bytes of user
//	.    1     srcLen, then srcLen bytes of source (the sender's node id)
//	.    rest  payload
//
// The smallest envelope is 18 bytes. Decode never allocates (the fields
// alias the frame) and refuses a wrong version, an unknown kind and any
// length past the end with an error wrapping ErrMalformed.
//
// # Lock order
//
// inbound.mu (held while a frame is handled, Handler included) before
// Relay.mu; link.fail is never called with Relay.mu held.
package relay
