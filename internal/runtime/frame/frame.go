// Package frame implements the zinx TLV wire format (msgID uint32, length
// uint32, both big-endian, then the payload) with a hard size limit on
// receive, and a coalescing, bounded writer for sending.
//
// zinx v1.2.8 does not enforce MaxPacketSize on receive; every zcluster
// listener decodes frames with a Decoder instead, so one bad length header
// can never make a node allocate more than its limit.
package frame

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// HeaderLen is the size of a frame header: msgID and length, 4 bytes each.
const HeaderLen = 8

// DefaultMaxFrame is the default limit on one frame's payload (64 KiB).
const DefaultMaxFrame = 64 << 10

// ErrTooLarge is returned when a frame header declares a payload larger than
// the decoder's limit.
var ErrTooLarge = errors.New("frame: payload exceeds limit")

// Append appends one frame to dst and returns the extended slice.
func Append(dst []byte, msgID uint32, payload []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, msgID)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(payload)))
	return append(dst, payload...)
}

// Decoder splits a byte stream into frames. It is not safe for concurrent
// use; one decoder belongs to one connection's reader.
type Decoder struct {
	max int
	buf []byte
}

// NewDecoder returns a decoder that refuses payloads larger than max bytes.
// A max of zero or less means DefaultMaxFrame.
func NewDecoder(max int) *Decoder {
	if max <= 0 {
		max = DefaultMaxFrame
	}
	return &Decoder{max: max}
}

// Feed consumes chunk (which the caller may reuse after Feed returns) and
// calls fn for every complete frame, in order. The payload passed to fn is
// only valid during the call. Feed stops at the first error, from the
// stream (ErrTooLarge, wrapped) or from fn, and the decoder must then be
// discarded together with its connection.
func (d *Decoder) Feed(chunk []byte, fn func(msgID uint32, payload []byte) error) error {
	data := chunk
	if len(d.buf) > 0 {
		d.buf = append(d.buf, chunk...)
		data = d.buf
	}
	off := 0
	for len(data)-off >= HeaderLen {
		msgID := binary.BigEndian.Uint32(data[off:])
		n := binary.BigEndian.Uint32(data[off+4:])
		if uint64(n) > uint64(d.max) {
			return fmt.Errorf("%w: msgID %d declares %d bytes, limit %d", ErrTooLarge, msgID, n, d.max)
		}
		end := off + HeaderLen + int(n)
		if end > len(data) {
			break
		}
		if err := fn(msgID, data[off+HeaderLen:end]); err != nil {
			return err
		}
		off = end
	}
	rest := data[off:]
	switch {
	case len(rest) == 0:
		d.buf = d.buf[:0]
	case len(d.buf) > 0:
		// data aliases d.buf: move the tail to the front.
		d.buf = d.buf[:copy(d.buf, rest)]
	default:
		d.buf = append(d.buf[:0], rest...)
	}
	// Do not keep a large buffer alive for an idle connection.
	if len(d.buf) == 0 && cap(d.buf) > 4*d.max && cap(d.buf) > 64<<10 {
		d.buf = nil
	}
	return nil
}

// Buffered reports how many bytes of an incomplete frame are held.
func (d *Decoder) Buffered() int { return len(d.buf) }
