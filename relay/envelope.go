package relay

import (
	"encoding/binary"
	"fmt"
)

// Version is the envelope format version; Decode refuses any other.
const Version = 1

// Kind says what an envelope carries and who acts on it.
type Kind uint8

// Envelope kinds. The comment of each names its direction and the fields
// that matter.
const (
	KindForward   Kind = 1 // gate -> backend: a client message (Session, User, MsgID, Seq, Payload)
	KindReply     Kind = 2 // backend -> gate: a frame for Session answering forward Seq; FlagDone marks the forward finished
	KindPush      Kind = 3 // any -> gate: a frame for Session
	KindKick      Kind = 4 // any -> gate: close Session, Payload is the reason
	KindBroadcast Kind = 5 // any -> gate: MsgID+Payload to every logged-in session of the gate
	KindCall      Kind = 6 // backend -> backend: request, Seq is the call id
	KindCallReply Kind = 7 // answer to call Seq; FlagError: Payload is the error text
	KindDone      Kind = 8 // backend -> gate: forward Seq finished; with FlagError Payload is an error text for the client
	KindLeaving   Kind = 9 // any -> any: the sender is shutting down; send it nothing new
	// Room kinds carry the room name in User.
	KindRoomJoin  Kind = 10 // backend -> gate: Session joined room User (the gate fans the room's pushes out to it)
	KindRoomLeave Kind = 11 // backend -> gate: Session left room User
	KindRoomPush  Kind = 12 // any -> gate: MsgID+Payload to every member of room User on the gate
	// KindSessionClosed: gate -> backend, and backend -> backend it called
	// for the session: Session (of user User) closed; Payload is the reason.
	KindSessionClosed Kind = 13

	kindMax = KindSessionClosed
)

// Envelope flags.
const (
	// FlagDone on a KindReply marks the forward it answers as finished.
	FlagDone uint8 = 1 << 0
	// FlagError on a KindCallReply or KindDone says Payload is an error text.
	FlagError uint8 = 1 << 1
)

// String returns the kind's name, for logs.
func (k Kind) String() string {
	switch k {
	case KindForward:
		return "forward"
	case KindReply:
		return "reply"
	case KindPush:
		return "push"
	case KindKick:
		return "kick"
	case KindBroadcast:
		return "broadcast"
	case KindCall:
		return "call"
	case KindCallReply:
		return "call-reply"
	case KindDone:
		return "done"
	case KindLeaving:
		return "leaving"
	case KindRoomJoin:
		return "room-join"
	case KindRoomLeave:
		return "room-leave"
	case KindRoomPush:
		return "room-push"
	case KindSessionClosed:
		return "session-closed"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Valid reports whether k is a kind this version defines.
func (k Kind) Valid() bool { return k >= KindForward && k <= kindMax }

// fixedLen is version, kind, flags, msgID, seq and the three length bytes.
const fixedLen = 1 + 1 + 1 + 4 + 8 + 3

// MaxFieldLen is the longest Session, User or Source an envelope can carry.
const MaxFieldLen = 255

// MaxOverhead is the most an envelope adds to its payload: the fixed
// header and three fields of MaxFieldLen. A relay whose MaxFrame is a
// payload limit plus MaxOverhead carries every payload up to that limit.
const MaxOverhead = fixedLen + 3*MaxFieldLen

// Envelope is one message between nodes. The layout on the wire is in
// doc.go. Decode makes the byte fields alias its input; Append copies them.
type Envelope struct {
	Kind    Kind
	Flags   uint8
	MsgID   uint32 // the client-facing msgID of the message carried
	Seq     uint64 // forward sequence or call id, see the kinds
	Session []byte // <= 255 bytes
	User    []byte // <= 255 bytes
	Source  []byte // sender node id, <= 255 bytes; on receive the relay sets it to the authenticated peer id
	Payload []byte
}

// Size returns the encoded length of e.
func (e *Envelope) Size() int {
	return fixedLen + len(e.Session) + len(e.User) + len(e.Source) + len(e.Payload)
}

// Append appends the encoding of e to dst and returns the extended slice.
// It fails with ErrFieldTooLong if Session, User or Source exceeds 255
// bytes and with ErrUnknownKind for an undefined Kind; dst is then
// returned unchanged. It does not allocate when dst has room.
func (e *Envelope) Append(dst []byte) ([]byte, error) {
	if !e.Kind.Valid() {
		return dst, fmt.Errorf("%w: %d", ErrUnknownKind, uint8(e.Kind))
	}
	switch {
	case len(e.Session) > MaxFieldLen:
		return dst, fmt.Errorf("%w: session is %d bytes", ErrFieldTooLong, len(e.Session))
	case len(e.User) > MaxFieldLen:
		return dst, fmt.Errorf("%w: user is %d bytes", ErrFieldTooLong, len(e.User))
	case len(e.Source) > MaxFieldLen:
		return dst, fmt.Errorf("%w: source is %d bytes", ErrFieldTooLong, len(e.Source))
	}
	dst = append(dst, Version, byte(e.Kind), e.Flags)
	dst = binary.BigEndian.AppendUint32(dst, e.MsgID)
	dst = binary.BigEndian.AppendUint64(dst, e.Seq)
	dst = append(dst, byte(len(e.Session)))
	dst = append(dst, e.Session...)
	dst = append(dst, byte(len(e.User)))
	dst = append(dst, e.User...)
	dst = append(dst, byte(len(e.Source)))
	dst = append(dst, e.Source...)
	return append(dst, e.Payload...), nil
}

// Decode parses b into e. The byte fields alias b (capacity capped at their
// length, so appending to one never overwrites the next); empty fields are
// nil. Any malformed input returns an error wrapping ErrMalformed and
// leaves e reset. Decode never panics and never allocates.
func (e *Envelope) Decode(b []byte) error {
	*e = Envelope{}
	if len(b) < fixedLen {
		return errShort
	}
	if b[0] != Version {
		return errVersion
	}
	k := Kind(b[1])
	if !k.Valid() {
		return errKind
	}
	off := 15
	session, off, ok := field(b, off)
	if !ok {
		return errSessionLen
	}
	user, off, ok := field(b, off)
	if !ok {
		return errUserLen
	}
	source, off, ok := field(b, off)
	if !ok {
		return errSourceLen
	}
	e.Kind = k
	e.Flags = b[2]
	e.MsgID = binary.BigEndian.Uint32(b[3:7])
	e.Seq = binary.BigEndian.Uint64(b[7:15])
	e.Session, e.User, e.Source = session, user, source
	if off < len(b) {
		e.Payload = b[off:len(b):len(b)]
	}
	return nil
}

// field reads one length-prefixed field at off. The length byte must be
// there (ok is false otherwise) and the field must end within b.
func field(b []byte, off int) (f []byte, next int, ok bool) {
	if off >= len(b) {
		return nil, off, false
	}
	n := int(b[off])
	off++
	end := off + n
	if end > len(b) {
		return nil, off, false
	}
	if n == 0 {
		return nil, end, true
	}
	return b[off:end:end], end, true
}

// Reset clears e, dropping its references to any buffer.
func (e *Envelope) Reset() { *e = Envelope{} }
