package inbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/zcluster/zcluster/protocol"
)

// Client frames of the reliable channel (stock zinx TLV frames; all
// integers big-endian). The msgIDs are reserved in package protocol, next
// to the framework's others (9 kick, 65534 heartbeat, 65535 error).
const (
	// MsgMessage (gate -> client) carries one reliable message:
	//
	//	offset uint64 | epoch uint64 | app msgID uint32 | app payload
	MsgMessage = protocol.MsgReliable
	// MsgResume is the resume request (client -> gate, after login):
	//
	//	epoch uint64 | last offset seen uint64          (exactly 16 bytes)
	//
	// and its answer (gate -> client), sent before the replayed messages:
	//
	//	status uint8 | epoch uint64 | next uint64 | last uint64   (25 bytes)
	//
	// The messages next..last follow as MsgMessage frames, then live ones
	// from last+1, each offset once and in order. status StatusGap says the
	// messages after the client's offset and before next are gone (trimmed,
	// expired, or the epoch changed: offsets restarted). The gate may send
	// a StatusGap answer again later, unasked, if history is lost while the
	// client is connected.
	MsgResume = protocol.MsgResume
)

// Resume answer statuses.
const (
	// StatusOK: nothing the client asked for is missing.
	StatusOK uint8 = 0
	// StatusGap: messages the client has not seen are gone; next says where
	// the inbox resumes.
	StatusGap uint8 = 1
)

// Special resume requests.
const (
	// FromStart (with epoch 0) asks for everything stored.
	FromStart uint64 = 0
	// FromNow (with epoch 0) asks for live messages only.
	FromNow uint64 = math.MaxUint64
)

// Frame sizes.
const (
	MessageHeaderLen = 20
	ResumeRequestLen = 16
	ResumeAnswerLen  = 25
)

// ErrMalformed is returned (wrapped) for a frame that does not have its
// layout.
var ErrMalformed = errors.New("inbox: malformed frame")

// Message is a decoded MsgMessage frame.
type Message struct {
	Offset  uint64
	Epoch   uint64
	MsgID   uint32
	Payload []byte // aliases the frame
}

// AppendMessage appends the MsgMessage payload for one message to dst.
func AppendMessage(dst []byte, offset, epoch uint64, msgID uint32, payload []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, offset)
	dst = binary.BigEndian.AppendUint64(dst, epoch)
	dst = binary.BigEndian.AppendUint32(dst, msgID)
	return append(dst, payload...)
}

// ParseMessage decodes a MsgMessage payload.
func ParseMessage(b []byte) (Message, error) {
	if len(b) < MessageHeaderLen {
		return Message{}, fmt.Errorf("%w: message of %d bytes, header is %d", ErrMalformed, len(b), MessageHeaderLen)
	}
	m := Message{
		Offset: binary.BigEndian.Uint64(b[0:8]),
		Epoch:  binary.BigEndian.Uint64(b[8:16]),
		MsgID:  binary.BigEndian.Uint32(b[16:20]),
	}
	if len(b) > MessageHeaderLen {
		m.Payload = b[MessageHeaderLen:]
	}
	if m.Offset == 0 || m.Epoch == 0 {
		return Message{}, fmt.Errorf("%w: offset and epoch must not be 0", ErrMalformed)
	}
	return m, nil
}

// ResumeRequest is a decoded MsgResume request.
type ResumeRequest struct {
	Epoch  uint64
	Offset uint64
}

// Append appends the request's payload to dst.
func (r ResumeRequest) Append(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, r.Epoch)
	return binary.BigEndian.AppendUint64(dst, r.Offset)
}

// ParseResumeRequest decodes a MsgResume request payload.
func ParseResumeRequest(b []byte) (ResumeRequest, error) {
	if len(b) != ResumeRequestLen {
		return ResumeRequest{}, fmt.Errorf("%w: resume request of %d bytes, want %d (epoch uint64, offset uint64)", ErrMalformed, len(b), ResumeRequestLen)
	}
	return ResumeRequest{Epoch: binary.BigEndian.Uint64(b[:8]), Offset: binary.BigEndian.Uint64(b[8:])}, nil
}

// ResumeAnswer is a decoded MsgResume answer.
type ResumeAnswer struct {
	Status uint8
	Epoch  uint64
	Next   uint64
	Last   uint64
}

// Append appends the answer's payload to dst.
func (a ResumeAnswer) Append(dst []byte) []byte {
	dst = append(dst, a.Status)
	dst = binary.BigEndian.AppendUint64(dst, a.Epoch)
	dst = binary.BigEndian.AppendUint64(dst, a.Next)
	return binary.BigEndian.AppendUint64(dst, a.Last)
}

// ParseResumeAnswer decodes a MsgResume answer payload.
func ParseResumeAnswer(b []byte) (ResumeAnswer, error) {
	if len(b) != ResumeAnswerLen || b[0] > StatusGap {
		return ResumeAnswer{}, fmt.Errorf("%w: resume answer of %d bytes", ErrMalformed, len(b))
	}
	return ResumeAnswer{
		Status: b[0],
		Epoch:  binary.BigEndian.Uint64(b[1:9]),
		Next:   binary.BigEndian.Uint64(b[9:17]),
		Last:   binary.BigEndian.Uint64(b[17:25]),
	}, nil
}

// userHash is the low half of every epoch of user's inbox.
func userHash(user string) uint32 {
	h := uint32(2166136261) // FNV-1a, inline: no allocation
	for i := 0; i < len(user); i++ {
		h ^= uint32(user[i])
		h *= 16777619
	}
	return h
}

// NewEpoch returns a fresh epoch for user's inbox: 32 random bits, then a
// 32-bit hash of the user name, so a gate can tell an epoch of another
// user's inbox (refused) from an older epoch of this one (a gap). Never 0.
//
// Epochs need to differ, not to be secret: the high half comes from
// math/rand/v2's per-process random source (no system call per append).
func NewEpoch(user string) uint64 {
	for {
		if hi := rand.Uint32(); hi != 0 {
			return uint64(hi)<<32 | uint64(userHash(user))
		}
	}
}

// EpochOf reports whether epoch could be an epoch of user's inbox.
func EpochOf(user string, epoch uint64) bool {
	return epoch>>32 != 0 && uint32(epoch) == userHash(user)
}
