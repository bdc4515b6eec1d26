// Package protocol holds what the client protocol reserves: the msgIDs that
// the framework itself sends or answers. Application handlers (gate.Handle,
// backend.Handle) may not use them.
//
// A client speaks stock zinx TLV frames (msgID uint32, length uint32,
// big-endian, then the payload) to a gate.
package protocol

// Reserved client msgIDs.
const (
	// MsgKick (gate -> client) tells a client why it is being disconnected,
	// JSON {"reason":"..."}; the connection is closed after it.
	MsgKick uint32 = 9
	// MsgHeartbeat (client -> gate -> client) keeps an idle connection
	// open: the gate answers it itself, with msgID MsgHeartbeat and the same
	// payload, without routing it and before any login.
	MsgHeartbeat uint32 = 65534
	// MsgError (gate -> client) is an error frame,
	// JSON {"msg_id":N,"error":"..."}.
	MsgError uint32 = 65535
	// MsgReliable (gate -> client) carries one reliable message (see
	// package inbox and backend.Backend.Deliver): offset uint64, epoch
	// uint64, application msgID uint32, application payload.
	MsgReliable uint32 = 65533
	// MsgResume (client -> gate, after login) asks for the reliable
	// messages after a position: epoch uint64, last offset seen uint64. The
	// gate answers with MsgResume too (status uint8, epoch, next, last:
	// uint64 each), then replays, then goes live (see package inbox).
	MsgResume uint32 = 65532
)

// Reserved reports whether msgID is one of the framework's own msgIDs,
// which no application handler may register.
func Reserved(msgID uint32) bool {
	switch msgID {
	case MsgKick, MsgHeartbeat, MsgError, MsgReliable, MsgResume:
		return true
	}
	return false
}
