// Package zclient is a small client for a zcluster gate, speaking stock zinx
// TLV frames over TCP (Dial), WebSocket (DialWS: one frame per binary
// message) or KCP (DialKCP). The demo tour, the chat command and the tests
// use it; any zinx client (znet.NewClient with the default pack) works the
// same way over TCP.
package zclient

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/zcluster/zcluster/internal/runtime/frame"
)

// Frame is one received message.
type Frame struct {
	MsgID   uint32
	Payload []byte
}

// Conn is a client connection. Send is safe for concurrent use; frames are
// received by one reader goroutine into Frames.
type Conn struct {
	nc     streamConn
	wmu    sync.Mutex
	frames chan Frame
	done   chan struct{}
	err    error

	closeOnce sync.Once
	closed    chan struct{} // closed by Close: the reader stops waiting for room in frames
}

// streamConn is what a Conn reads frames from and writes them to.
type streamConn interface {
	io.ReadWriteCloser
	SetWriteDeadline(time.Time) error
}

// ErrClosed is returned once the connection has ended.
var ErrClosed = errors.New("zclient: connection closed")

// Dial connects to a gate.
func Dial(ctx context.Context, addr string) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return newConn(nc), nil
}

func newConn(nc streamConn) *Conn {
	c := &Conn{nc: nc, frames: make(chan Frame, 4096), done: make(chan struct{}), closed: make(chan struct{})}
	go c.read()
	return c
}

func (c *Conn) read() {
	defer close(c.done)
	defer close(c.frames)
	r := bufio.NewReaderSize(c.nc, 64<<10)
	var hdr [frame.HeaderLen]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			c.err = err
			return
		}
		n := binary.BigEndian.Uint32(hdr[4:])
		if n > 16<<20 {
			c.err = fmt.Errorf("zclient: frame of %d bytes", n)
			return
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(r, p); err != nil {
			c.err = err
			return
		}
		select {
		case c.frames <- Frame{MsgID: binary.BigEndian.Uint32(hdr[:4]), Payload: p}:
		case <-c.closed:
			c.err = ErrClosed
			return
		}
	}
}

// Send writes one frame.
func (c *Conn) Send(msgID uint32, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.nc.Write(frame.Append(nil, msgID, payload))
	return err
}

// SendRaw writes raw bytes (for tests that send malformed input).
func (c *Conn) SendRaw(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.nc.Write(b)
	return err
}

// Frames returns the channel of received frames; it is closed when the
// connection ends.
func (c *Conn) Frames() <-chan Frame { return c.frames }

// Recv waits for the next frame.
func (c *Conn) Recv(ctx context.Context) (Frame, error) {
	select {
	case f, ok := <-c.frames:
		if !ok {
			return Frame{}, ErrClosed
		}
		return f, nil
	case <-ctx.Done():
		return Frame{}, ctx.Err()
	}
}

// Expect waits for the next frame with msgID, skipping the others (which
// are returned too, in order, so a caller can inspect them).
func (c *Conn) Expect(ctx context.Context, msgID uint32) (Frame, []Frame, error) {
	var skipped []Frame
	for {
		f, err := c.Recv(ctx)
		if err != nil {
			return Frame{}, skipped, fmt.Errorf("waiting for msgID %d: %w", msgID, err)
		}
		if f.MsgID == msgID {
			return f, skipped, nil
		}
		skipped = append(skipped, f)
	}
}

// Err returns why the connection ended (valid once Done is closed): for a
// WebSocket closed by the gate, a *websocket.CloseError with its code and
// reason.
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Close closes the connection; the reader goroutine ends even if Frames
// is never drained.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.nc.Close()
}
