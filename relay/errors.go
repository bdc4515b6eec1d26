package relay

import (
	"errors"
	"fmt"
)

// Sentinel errors. Errors returned by this package wrap one of these (test
// with errors.Is); the wrapping text names the peer or the field at fault.
var (
	// ErrMalformed is wrapped by Decode for any input that is not a valid
	// envelope: wrong version, unknown kind, truncated, a length past the end.
	ErrMalformed = errors.New("relay: malformed envelope")
	// ErrFieldTooLong is returned by Append when Session, User or Source is
	// longer than 255 bytes.
	ErrFieldTooLong = errors.New("relay: envelope field longer than 255 bytes")
	// ErrUnknownKind is returned by Append for a Kind this version does not
	// define: a peer would refuse it and close the link.
	ErrUnknownKind = errors.New("relay: unknown envelope kind")
	// ErrTooLarge is returned by Send when the encoded envelope exceeds
	// Config.MaxFrame: the peer would close the link on it.
	ErrTooLarge = errors.New("relay: envelope exceeds the frame limit")

	// ErrNoNodeID is returned by New when Config.NodeID is empty or longer
	// than 255 bytes.
	ErrNoNodeID = errors.New("relay: node id required (1-255 bytes)")
	// ErrNoSecret is returned by New when Config.Secret is empty and
	// Config.Insecure is not set.
	ErrNoSecret = errors.New("relay: secret required (or set Insecure for development)")
	// ErrNoResolver is returned by New when Config.Resolve is nil.
	ErrNoResolver = errors.New("relay: resolve function required")

	// ErrStarted is returned by a second Start.
	ErrStarted = errors.New("relay: already started")
	// ErrNotStarted is returned by Send before Start.
	ErrNotStarted = errors.New("relay: not started")
	// ErrClosed is returned once Close has been called.
	ErrClosed = errors.New("relay: closed")
	// ErrUnknownPeer is returned by Send when Resolve does not know the node.
	ErrUnknownPeer = errors.New("relay: unknown peer")
	// ErrDial is returned by Send when the peer's relay cannot be reached.
	// During the redial backoff that follows a failure the same error is
	// returned at once.
	ErrDial = errors.New("relay: dial failed")
	// ErrHandshake is returned by Send when the peer refused our credentials
	// or failed to prove its own (different secrets, or not a relay).
	ErrHandshake = errors.New("relay: handshake failed")
	// ErrWrongPeer is wrapped in ErrHandshake when the address of a peer
	// answers with another node id (the topology was stale).
	ErrWrongPeer = errors.New("relay: address answered by another node")
	// ErrBackpressure is returned by Send when the link's send queue would
	// exceed Config.MaxPending. The peer is not keeping up: the link is
	// closed (what was queued on it is lost) and the next Send re-dials.
	ErrBackpressure = errors.New("relay: send queue full")
	// ErrLinkDown is returned by Send when the link broke while sending and
	// a fresh link could not be used either.
	ErrLinkDown = errors.New("relay: link down")
	// ErrLinkDropped is the cause given to Sends waiting on a dial that
	// DropPeer cancelled.
	ErrLinkDropped = errors.New("relay: link dropped")
	// ErrNoLink is returned by SendIfLinked when no outbound link to the
	// peer is up (it never dials one).
	ErrNoLink = errors.New("relay: no link to the peer")
)

// Preformatted Decode errors: decoding never allocates, not even to fail.
var (
	errShort      = fmt.Errorf("%w: shorter than the fixed header", ErrMalformed)
	errVersion    = fmt.Errorf("%w: unsupported version", ErrMalformed)
	errKind       = fmt.Errorf("%w: unknown kind", ErrMalformed)
	errSessionLen = fmt.Errorf("%w: session length past the end", ErrMalformed)
	errUserLen    = fmt.Errorf("%w: user length past the end", ErrMalformed)
	errSourceLen  = fmt.Errorf("%w: source length past the end", ErrMalformed)
)
