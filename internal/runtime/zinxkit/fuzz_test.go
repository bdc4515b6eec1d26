package zinxkit

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aceld/zinx/ziface"

	"github.com/zcluster/zcluster/internal/runtime/frame"
)

// The fuzz target below drives a client connection's receive path exactly
// as zinx does, without a network: raw read chunks (in a buffer reused and
// scribbled over between reads, as zinx reuses its read buffer) go through
// rawDecoder.Intercept to the Handler, whose replies go through the
// connection's frame.Writer. zinx's own objects are replaced by the few
// methods zinxkit calls.

// fakeZC stands for a zinx connection.
type fakeZC struct {
	ziface.IConnection // nil: any other method panics
	nc                 net.Conn
	stops              atomic.Int32
}

func (f *fakeZC) Stop()                    { f.stops.Add(1) }
func (f *fakeZC) GetConnID() uint64        { return 1 }
func (f *fakeZC) GetConnection() net.Conn  { return f.nc }
func (f *fakeZC) RemoteAddrString() string { return "fuzz" }
func (f *fakeZC) Context() context.Context { return context.Background() }

type fakeReq struct {
	ziface.IRequest
	zc   ziface.IConnection
	data []byte
}

func (r fakeReq) GetConnection() ziface.IConnection { return r.zc }
func (r fakeReq) GetData() []byte                   { return r.data }

type fakeChain struct {
	ziface.IChain
	req ziface.IRequest
}

func (c fakeChain) Request() ziface.IcReq { return c.req }

// sinkConn swallows writes.
type sinkConn struct {
	net.Conn // nil
	n        atomic.Int64
}

func (s *sinkConn) Write(p []byte) (int, error)      { s.n.Add(int64(len(p))); return len(p), nil }
func (s *sinkConn) SetWriteDeadline(time.Time) error { return nil }

// fuzzMax is the frame limit of the fuzzed server: small, so that inputs
// reach it often.
const fuzzMax = 256

// closeMsgID makes the fuzz handler close the connection from OnFrame, as
// a gate does when it kicks a client.
const closeMsgID = 0xC105E

type fuzzFrame struct {
	id uint32
	p  []byte
}

// recorder is a Handler that keeps copies of what it sees and answers every
// frame with an error-like reply through the writer.
type recorder struct {
	opens, closes int
	frames        []fuzzFrame
	afterClose    int
}

func (r *recorder) OnOpen(*Conn) { r.opens++ }
func (r *recorder) OnClose(*Conn) {
	r.closes++
}

func (r *recorder) OnFrame(c *Conn, id uint32, p []byte) {
	if r.closes > 0 || c.Closed() {
		r.afterClose++
	}
	r.frames = append(r.frames, fuzzFrame{id, bytes.Clone(p)})
	_ = c.Send(65535, p)
	if id == closeMsgID {
		c.Close()
	}
}

// reference parses data the slow, obvious way: the frames a client
// connection must deliver, and whether it must be closed.
func reference(data []byte) (frames []fuzzFrame, closed bool) {
	for off := 0; len(data)-off >= frame.HeaderLen; {
		id := binary.BigEndian.Uint32(data[off:])
		n := uint64(binary.BigEndian.Uint32(data[off+4:]))
		if n > fuzzMax {
			return frames, true
		}
		end := off + frame.HeaderLen + int(n)
		if end > len(data) {
			break
		}
		frames = append(frames, fuzzFrame{id, data[off+frame.HeaderLen : end]})
		if id == closeMsgID {
			return frames, true
		}
		off = end
	}
	return frames, false
}

func FuzzClientFrames(f *testing.F) {
	f.Add(frame.Append(nil, 1, []byte("alice")), []byte{})
	f.Add(frame.Append(frame.Append(nil, 1, []byte("bob")), 2, []byte(`{"to":"alice","text":"hi"}`)), []byte{3, 1, 7})
	f.Add([]byte{0, 0, 0, 4, 0x80, 0, 0, 0, 'x', 'y'}, []byte{})
	f.Add(frame.Append(nil, 4, make([]byte, fuzzMax+1)), []byte{5})
	f.Add(frame.Append(frame.Append(nil, closeMsgID, nil), 4, []byte("after close")), []byte{})
	f.Add(append(frame.Append(nil, 4, make([]byte, fuzzMax)), 0, 0, 0), []byte{1})
	f.Add([]byte("GET / HTTP/1.1\r\nHost: gate\r\n\r\n"), []byte{2})
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		if len(data) > 64<<10 {
			return
		}
		sink := &sinkConn{}
		rec := &recorder{}
		s := &Server{cfg: Config{Name: "fuzz", MaxFrame: fuzzMax, Logger: slog.New(slog.DiscardHandler),
			Writer: frame.WriterConfig{MaxPending: 16 << 20}}, handler: rec}
		zc := &fakeZC{nc: sink}
		s.onStart(zc)
		dec := rawDecoder{s}
		buf := make([]byte, 4096) // zinx's read buffer, reused
		for off, i := 0, 0; off < len(data); i++ {
			n := len(data) - off
			if len(cuts) > 0 {
				n = min(n, int(cuts[i%len(cuts)])+1)
			}
			n = min(n, len(buf))
			copy(buf, data[off:off+n])
			dec.Intercept(fakeChain{req: fakeReq{zc: zc, data: buf[:n]}})
			for j := range buf[:n] {
				buf[j] = 0xAA
			}
			off += n
		}
		want, wantClosed := reference(data)
		if len(rec.frames) != len(want) {
			t.Fatalf("delivered %d frames, want %d", len(rec.frames), len(want))
		}
		for i, w := range want {
			if g := rec.frames[i]; g.id != w.id || !bytes.Equal(g.p, w.p) {
				t.Fatalf("frame %d: got %d/%x, want %d/%x", i, g.id, g.p, w.id, w.p)
			}
		}
		if closed := zc.stops.Load() > 0; closed != wantClosed {
			t.Fatalf("closed = %v, want %v", closed, wantClosed)
		}
		if rec.afterClose > 0 {
			t.Fatalf("%d frames delivered after close", rec.afterClose)
		}
		// zinx then runs OnConnStop; nothing is delivered afterwards.
		s.onStop(zc)
		s.onStop(zc)
		dec.Intercept(fakeChain{req: fakeReq{zc: zc, data: frame.Append(nil, 7, nil)}})
		if rec.opens != 1 || rec.closes != 1 || len(rec.frames) != len(want) || s.Len() != 0 {
			t.Fatalf("opens %d closes %d frames %d conns %d after stop", rec.opens, rec.closes, len(rec.frames), s.Len())
		}
	})
}
