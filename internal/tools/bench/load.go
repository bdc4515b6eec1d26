package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zcluster/zcluster/inbox"
	"github.com/zcluster/zcluster/internal/runtime/frame"
	"github.com/zcluster/zcluster/internal/tools/zclient"
)

// Client msgIDs the scenarios use (those of the chat demo application).
const (
	msgLogin       uint32 = 1
	msgSend        uint32 = 2
	msgEcho        uint32 = 4
	msgBroadcast   uint32 = 5
	msgDelivered   uint32 = 100
	msgBroadcasted uint32 = 101
	msgReliable    uint32 = 6
	msgError       uint32 = 65535
)

// loadConn is one load-generating client connection. A writer goroutine
// keeps up to window requests outstanding (a token per request, given back
// when its answer arrives) and flushes when no token is free; a reader
// goroutine counts what comes back.
type loadConn struct {
	nc streamConn
	r  *bufio.Reader
	w  *bufio.Writer

	// build appends one request frame; nil for a connection that only
	// receives.
	build func(b []byte, now int64) []byte
	// onFrame classifies a received frame; it runs on the reader goroutine.
	onFrame func(lc *loadConn, msgID uint32, payload []byte)

	tokens chan struct{}
	// interval paces the writer to one request per interval (0: as fast
	// as the window allows).
	interval time.Duration

	sent     atomic.Uint64
	answered atomic.Uint64 // replies or deliveries
	errs     atomic.Uint64 // error frames or refusals

	clock    *clock
	h        hist   // reader-owned
	relNext  uint64 // reliable receivers: the next offset expected (reader-owned)
	started  bool   // the reader runs (and closes readDone when it ends)
	readDone chan struct{}
}

// streamConn is a TCP connection, or a WebSocket read as a stream.
type streamConn interface {
	io.ReadWriteCloser
	SetDeadline(t time.Time) error
}

// clock gives monotonic nanoseconds since the run began, and whether the
// measured interval is on (latencies are recorded only then).
type clock struct {
	base      time.Time
	measuring atomic.Bool
}

func (c *clock) now() int64 { return int64(time.Since(c.base)) }

func dial(ctx context.Context, addr string) (*loadConn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("bench: dial %s: %w", addr, err)
	}
	return &loadConn{
		nc:       nc,
		r:        bufio.NewReaderSize(nc, 64<<10),
		w:        bufio.NewWriterSize(nc, 64<<10),
		readDone: make(chan struct{}),
	}, nil
}

// dialWS connects to a gate's WebSocket endpoint. The writer's buffer
// holds a whole window of requests, so that a flush hands over whole
// frames; they leave in as few binary messages as the gate's message limit
// (one default-size frame, 64 KiB + 8 bytes) allows.
func dialWS(ctx context.Context, url string, window, payload int) (*loadConn, error) {
	ws, err := zclient.DialWSStream(ctx, url, zclient.WSOptions{})
	if err != nil {
		return nil, fmt.Errorf("bench: dial %s: %w", url, err)
	}
	mw := wsMessages{ws}
	return &loadConn{
		nc:       ws,
		r:        bufio.NewReaderSize(ws, 64<<10),
		w:        bufio.NewWriterSize(mw, max(64<<10, window*(payload+frame.HeaderLen+64))),
		readDone: make(chan struct{}),
	}, nil
}

// dialKCP connects to a gate's KCP listener (UDP), with the settings of
// zclient.DialKCP.
func dialKCP(ctx context.Context, addr string) (*loadConn, error) {
	sess, err := zclient.DialKCPSession(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("bench: dial kcp %s: %w", addr, err)
	}
	return &loadConn{
		nc:       sess,
		r:        bufio.NewReaderSize(sess, 64<<10),
		w:        bufio.NewWriterSize(sess, 64<<10),
		readDone: make(chan struct{}),
	}, nil
}

// wsMessages writes whole frames as binary messages of at most
// wsMessageLimit bytes each (a larger frame goes alone).
type wsMessages struct{ ws *zclient.WSStream }

const wsMessageLimit = frame.DefaultMaxFrame + frame.HeaderLen

func (m wsMessages) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		end := 0
		for end < len(p) {
			if len(p)-end < frame.HeaderLen {
				end = len(p) // not a frame: let the gate refuse it
				break
			}
			next := end + frame.HeaderLen + int(binary.BigEndian.Uint32(p[end+4:]))
			if next > len(p) {
				next = len(p)
			}
			if end > 0 && next > wsMessageLimit {
				break
			}
			end = next
		}
		if _, err := m.ws.Write(p[:end]); err != nil {
			return written, err
		}
		written += end
		p = p[end:]
	}
	return written, nil
}

// readFrame reads one frame into buf (grown as needed). It allocates
// nothing once buf is large enough.
func readFrame(r *bufio.Reader, buf []byte) (uint32, []byte, error) {
	hdr, err := r.Peek(frame.HeaderLen)
	if err != nil {
		return 0, buf, err
	}
	msgID := binary.BigEndian.Uint32(hdr[:4])
	n := binary.BigEndian.Uint32(hdr[4:])
	if n > 16<<20 {
		return 0, buf, fmt.Errorf("bench: frame of %d bytes", n)
	}
	_, _ = r.Discard(frame.HeaderLen)
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	_, err = io.ReadFull(r, buf)
	return msgID, buf, err
}

// login logs the connection in as user and waits for the answer.
func (lc *loadConn) login(ctx context.Context, user string) error {
	reply, errFrame, err := lc.roundTrip(ctx, msgLogin, []byte(user))
	switch {
	case err != nil:
		return fmt.Errorf("bench: login %s: %w", user, err)
	case errFrame != nil:
		return fmt.Errorf("bench: login %s: %s", user, errFrame)
	case !bytes.Contains(reply, []byte(`"ok":true`)):
		return fmt.Errorf("bench: login %s refused: %s", user, reply)
	}
	return nil
}

// request sends msgID with payload before the load starts and waits for
// the answer with the same msgID (an error frame fails it).
func (lc *loadConn) request(ctx context.Context, msgID uint32, payload []byte) error {
	_, errFrame, err := lc.roundTrip(ctx, msgID, payload)
	switch {
	case err != nil:
		return fmt.Errorf("bench: msgID %d: %w", msgID, err)
	case errFrame != nil:
		return fmt.Errorf("bench: msgID %d: %s", msgID, errFrame)
	}
	return nil
}

// roundTrip sends msgID with payload and waits, within ctx's deadline,
// for the answer with the same msgID (reply) or an error frame (errFrame);
// other frames are skipped.
func (lc *loadConn) roundTrip(ctx context.Context, msgID uint32, payload []byte) (reply, errFrame []byte, err error) {
	if d, ok := ctx.Deadline(); ok {
		_ = lc.nc.SetDeadline(d)
		defer lc.nc.SetDeadline(time.Time{})
	}
	if _, err := lc.w.Write(frame.Append(nil, msgID, payload)); err != nil {
		return nil, nil, err
	}
	if err := lc.w.Flush(); err != nil {
		return nil, nil, err
	}
	var buf []byte
	for {
		id, p, err := readFrame(lc.r, buf)
		if err != nil {
			return nil, nil, err
		}
		buf = p
		switch id {
		case msgID:
			return p, nil, nil
		case msgError:
			return nil, p, nil
		}
	}
}

// roomSayBuild builds msgID 21 with a stamped {"text":...} body.
func roomSayBuild(size int) func([]byte, int64) []byte {
	return func(b []byte, now int64) []byte {
		start := len(b)
		b = binary.BigEndian.AppendUint32(b, msgRoomSay)
		b = append(b, 0, 0, 0, 0)
		b = append(b, `{"text":"`...)
		b = textStamp(b, now, size)
		b = append(b, '"', '}')
		binary.BigEndian.PutUint32(b[start+4:], uint32(len(b)-start-frame.HeaderLen))
		return b
	}
}

// start launches the reader and, if the connection sends, the writer.
// The writer stops when stop is closed; wg counts it.
func (lc *loadConn) start(window int, stop <-chan struct{}, wg *sync.WaitGroup) {
	lc.started = true
	go asLoadgen(lc.read)
	if lc.build == nil {
		return
	}
	lc.tokens = make(chan struct{}, window)
	for range window {
		lc.tokens <- struct{}{}
	}
	wg.Add(1)
	go asLoadgen(func() {
		defer wg.Done()
		lc.write(stop)
	})
}

// release gives a request's token back to the writer.
func (lc *loadConn) release() {
	select {
	case lc.tokens <- struct{}{}:
	default: // more answers than requests: a bug elsewhere, never block
	}
}

func (lc *loadConn) write(stop <-chan struct{}) {
	buf := make([]byte, 0, 4096)
	var next time.Time // paced mode: when the next request is due
	for {
		select {
		case <-stop:
			return
		case <-lc.tokens:
		}
		limit := -1 // requests allowed now beyond the first (-1: no pacing)
		if lc.interval > 0 {
			now := time.Now()
			if next.IsZero() || now.Sub(next) > 100*time.Millisecond {
				next = now // start, or fell far behind: do not burst
			}
			if wait := next.Sub(now); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-stop:
					t.Stop()
					return
				case now = <-t.C:
				}
			}
			limit = int(now.Sub(next) / lc.interval)
			next = next.Add(time.Duration(limit+1) * lc.interval)
		}
		buf = lc.build(buf[:0], lc.clock.now())
		n := uint64(1)
	more:
		for limit != 0 {
			select {
			case <-lc.tokens:
				buf = lc.build(buf, lc.clock.now())
				n++
				limit--
			default:
				break more
			}
		}
		lc.sent.Add(n)
		if _, err := lc.w.Write(buf); err != nil {
			return
		}
		if err := lc.w.Flush(); err != nil {
			return
		}
	}
}

func (lc *loadConn) read() {
	defer close(lc.readDone)
	var buf []byte
	for {
		msgID, p, err := readFrame(lc.r, buf)
		if err != nil {
			return // closed at the end of the run, or by the server
		}
		buf = p
		lc.onFrame(lc, msgID, p)
	}
}

// latency records the time since the send timestamp ts.
func (lc *loadConn) latency(ts int64) {
	if lc.clock.measuring.Load() {
		lc.h.record(time.Duration(lc.clock.now() - ts))
	}
}

// close closes the connection and waits for its reader to end.
func (lc *loadConn) close() {
	_ = lc.nc.Close()
	if lc.started {
		<-lc.readDone
	}
}

// Request builders and frame classifiers of the scenarios.

// echoBuild returns a builder of msgID frames whose payload is the send
// time (8 bytes) padded to size bytes.
func echoBuild(msgID uint32, size int) func([]byte, int64) []byte {
	pad := make([]byte, max(size, 8)-8)
	for i := range pad {
		pad[i] = 'x'
	}
	return func(b []byte, now int64) []byte {
		b = binary.BigEndian.AppendUint32(b, msgID)
		b = binary.BigEndian.AppendUint32(b, uint32(8+len(pad)))
		b = binary.BigEndian.AppendUint64(b, uint64(now))
		return append(b, pad...)
	}
}

// echoFrame counts echoed replies of msgID.
func echoFrame(msgID uint32) func(*loadConn, uint32, []byte) {
	return func(lc *loadConn, id uint32, p []byte) {
		switch {
		case id == msgID && len(p) >= 8:
			lc.latency(int64(binary.BigEndian.Uint64(p)))
			lc.answered.Add(1)
			lc.release()
		case id == msgError:
			lc.errs.Add(1)
			lc.release()
		}
	}
}

// textStamp is the send time as 16 hex digits, padded with 'x' to size: a
// JSON-safe text for msgIDs 2 and 5.
func textStamp(b []byte, now int64, size int) []byte {
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], uint64(now))
	b = hex.AppendEncode(b, ts[:])
	for range size - 16 {
		b = append(b, 'x')
	}
	return b
}

var textKey = []byte(`"text":"`)

// stampOf finds the send time in a {"from","text"} body.
func stampOf(p []byte) (int64, bool) {
	i := bytes.Index(p, textKey)
	if i < 0 || len(p) < i+len(textKey)+16 {
		return 0, false
	}
	var ts [8]byte
	if _, err := hex.Decode(ts[:], p[i+len(textKey):i+len(textKey)+16]); err != nil {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(ts[:])), true
}

// sendBuild builds msgID (2 or 6) {"to":to,"text":stamp}.
func sendBuild(msgID uint32, to string, size int) func([]byte, int64) []byte {
	prefix := []byte(`{"to":"` + to + `","text":"`)
	return func(b []byte, now int64) []byte {
		start := len(b)
		b = binary.BigEndian.AppendUint32(b, msgID)
		b = append(b, 0, 0, 0, 0)
		b = append(b, prefix...)
		b = textStamp(b, now, size)
		b = append(b, '"', '}')
		binary.BigEndian.PutUint32(b[start+4:], uint32(len(b)-start-frame.HeaderLen))
		return b
	}
}

var okTrue = []byte(`"ok":true`)

// senderFrame counts the sender's acknowledgements of msgID (2 or 6).
func senderFrame(msgID uint32) func(*loadConn, uint32, []byte) {
	return func(lc *loadConn, id uint32, p []byte) {
		switch id {
		case msgID:
			if !bytes.Contains(p, okTrue) {
				lc.errs.Add(1)
			}
			lc.release()
		case msgError:
			lc.errs.Add(1)
			lc.release()
		}
	}
}

// resumeFromNow asks for live reliable messages only and waits for the
// answer, which sets the next offset expected.
func (lc *loadConn) resumeFromNow(ctx context.Context) error {
	if d, ok := ctx.Deadline(); ok {
		_ = lc.nc.SetDeadline(d)
		defer lc.nc.SetDeadline(time.Time{})
	}
	req := inbox.ResumeRequest{Offset: inbox.FromNow}.Append(nil)
	if _, err := lc.w.Write(frame.Append(nil, inbox.MsgResume, req)); err != nil {
		return err
	}
	if err := lc.w.Flush(); err != nil {
		return err
	}
	var buf []byte
	for {
		msgID, p, err := readFrame(lc.r, buf)
		if err != nil {
			return fmt.Errorf("bench: resume: %w", err)
		}
		buf = p
		switch msgID {
		case inbox.MsgResume:
			a, err := inbox.ParseResumeAnswer(p)
			if err != nil {
				return fmt.Errorf("bench: resume: %w", err)
			}
			lc.relNext = a.Next
			return nil
		case msgError:
			return fmt.Errorf("bench: resume: %s", p)
		}
	}
}

// reliableFrame counts reliable deliveries: each offset once, in order
// (a repeated or skipped offset counts as an error).
func reliableFrame(lc *loadConn, id uint32, p []byte) {
	switch id {
	case inbox.MsgMessage:
		m, err := inbox.ParseMessage(p)
		if err != nil || m.Offset != lc.relNext {
			lc.errs.Add(1)
			return
		}
		lc.relNext++
		if ts, ok := stampOf(m.Payload); ok {
			lc.latency(ts)
		}
		lc.answered.Add(1)
	case msgError:
		lc.errs.Add(1)
	}
}

// deliveryFrame counts deliveries of msgID (100 or 101) with their latency;
// a broadcaster also gets its token back when its own broadcast arrives.
func deliveryFrame(msgID uint32, releases bool) func(*loadConn, uint32, []byte) {
	return func(lc *loadConn, id uint32, p []byte) {
		switch id {
		case msgID:
			if ts, ok := stampOf(p); ok {
				lc.latency(ts)
			}
			lc.answered.Add(1)
			if releases {
				lc.release()
			}
		case msgError:
			lc.errs.Add(1)
			if releases {
				lc.release()
			}
		}
	}
}

// broadcastBuild builds msgID 5 with a stamped text.
func broadcastBuild(size int) func([]byte, int64) []byte {
	return func(b []byte, now int64) []byte {
		start := len(b)
		b = binary.BigEndian.AppendUint32(b, msgBroadcast)
		b = append(b, 0, 0, 0, 0)
		b = textStamp(b, now, size)
		binary.BigEndian.PutUint32(b[start+4:], uint32(len(b)-start-frame.HeaderLen))
		return b
	}
}
