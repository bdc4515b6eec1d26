package zclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
	"github.com/xtaci/kcp-go"
)

// WSOptions tunes DialWS.
type WSOptions struct {
	// Header is sent with the upgrade request (e.g. an Origin).
	Header http.Header
	// TLS configures wss:// (nil: the system roots).
	TLS *tls.Config
}

// DialWS connects to a gate's WebSocket endpoint (ws:// or wss:// URL).
// Every Send is one binary message holding one frame; received messages
// may hold several frames.
func DialWS(ctx context.Context, url string, o WSOptions) (*Conn, error) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, TLSClientConfig: o.TLS}
	ws, resp, err := d.DialContext(ctx, url, o.Header)
	if err != nil {
		if resp != nil {
			_ = resp.Body.Close()
			return nil, fmt.Errorf("%w: %s", err, resp.Status)
		}
		return nil, err
	}
	return newConn(&WSStream{ws: ws}), nil
}

// DialWSStream connects to a gate's WebSocket endpoint and returns the raw
// stream, for load generators that frame requests themselves: each Write
// must hold whole frames (it is sent as one binary message).
func DialWSStream(ctx context.Context, url string, o WSOptions) (*WSStream, error) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, TLSClientConfig: o.TLS}
	ws, resp, err := d.DialContext(ctx, url, o.Header)
	if err != nil {
		if resp != nil {
			_ = resp.Body.Close()
			return nil, fmt.Errorf("%w: %s", err, resp.Status)
		}
		return nil, err
	}
	return &WSStream{ws: ws}, nil
}

// WSStream reads a WebSocket's binary messages as one byte stream (the gate
// sends whole frames per message) and writes each Write as one binary
// message. Reads and writes may run concurrently with each other, not with
// themselves.
type WSStream struct {
	ws *websocket.Conn
	r  io.Reader
}

// errTextMessage ends a connection on which the gate sent text.
var errTextMessage = errors.New("zclient: text message on a zinx websocket")

// Read reads the next bytes of the message stream.
func (s *WSStream) Read(p []byte) (int, error) {
	for {
		if s.r == nil {
			mt, r, err := s.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if mt != websocket.BinaryMessage {
				return 0, errTextMessage
			}
			s.r = r
		}
		n, err := s.r.Read(p)
		if errors.Is(err, io.EOF) {
			s.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

// Write sends p as one binary message.
func (s *WSStream) Write(p []byte) (int, error) {
	if err := s.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// SetWriteDeadline bounds the next writes.
func (s *WSStream) SetWriteDeadline(t time.Time) error { return s.ws.SetWriteDeadline(t) }

// SetReadDeadline bounds the next reads.
func (s *WSStream) SetReadDeadline(t time.Time) error { return s.ws.SetReadDeadline(t) }

// SetDeadline bounds the next reads and writes.
func (s *WSStream) SetDeadline(t time.Time) error {
	_ = s.ws.SetReadDeadline(t)
	return s.ws.SetWriteDeadline(t)
}

// Close sends a normal close frame and closes the socket.
func (s *WSStream) Close() error {
	_ = s.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	return s.ws.Close()
}

// SendText sends a text message (which a gate refuses: for tests).
func (c *Conn) SendText(text string) error {
	s, ok := c.nc.(*WSStream)
	if !ok {
		return errors.New("zclient: SendText needs a websocket connection")
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return s.ws.WriteMessage(websocket.TextMessage, []byte(text))
}

// DialKCP connects to a gate's KCP listener (UDP host:port). KCP has no
// handshake: the first frame sent opens the session.
func DialKCP(ctx context.Context, addr string) (*Conn, error) {
	sess, err := DialKCPSession(ctx, addr)
	if err != nil {
		return nil, err
	}
	return newConn(sess), nil
}

// DialKCPSession is DialKCP's session as a stream (net.Conn), for callers
// that do their own framing (the bench).
func DialKCPSession(ctx context.Context, addr string) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sess, err := kcp.DialWithOptions(addr, nil, 0, 0)
	if err != nil {
		return nil, err
	}
	sess.SetStreamMode(true)
	sess.SetWriteDelay(false)
	sess.SetNoDelay(1, 10, 2, 1)
	sess.SetWindowSize(256, 256)
	sess.SetACKNoDelay(true)
	return sess, nil
}
