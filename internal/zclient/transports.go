package zclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
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
	return newConn(&wsStream{ws: ws}), nil
}

// wsStream reads a WebSocket's binary messages as one byte stream (the gate
// sends whole frames per message) and writes each Write as one message.
type wsStream struct {
	ws *websocket.Conn
	r  io.Reader
}

// errTextMessage ends a connection on which the gate sent text.
var errTextMessage = errors.New("zclient: text message on a zinx websocket")

func (s *wsStream) Read(p []byte) (int, error) {
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

func (s *wsStream) Write(p []byte) (int, error) {
	if err := s.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (s *wsStream) SetWriteDeadline(t time.Time) error { return s.ws.SetWriteDeadline(t) }

// Close sends a normal close frame and closes the socket.
func (s *wsStream) Close() error {
	_ = s.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	return s.ws.Close()
}

// SendText sends a text message (which a gate refuses: for tests).
func (c *Conn) SendText(text string) error {
	s, ok := c.nc.(*wsStream)
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
	return newConn(sess), nil
}
