package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aceld/zinx/zconf"
	"github.com/aceld/zinx/ziface"
	"github.com/aceld/zinx/zlog"
	"github.com/aceld/zinx/znet"

	"github.com/zcluster/zcluster/internal/runtime/frame"
)

// server is a reference echo server the tool starts in-process.
type server interface {
	Addr() string
	Close()
}

// plainServer is a plain Go echo server with the same framing: one
// goroutine per connection, bufio on both sides, and a flush only when the
// reader has no more buffered input. It is the practical limit of the
// machine. dropEvery > 0 swallows every dropEvery-th request (for tests).
type plainServer struct {
	ln        net.Listener
	dropEvery int
	dropped   atomic.Int64
	wg        sync.WaitGroup
	mu        sync.Mutex
	conns     map[net.Conn]struct{}
	closed    bool
}

func startPlain(dropEvery int) (*plainServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: plain server: %w", err)
	}
	s := &plainServer{ln: ln, dropEvery: dropEvery, conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

func (s *plainServer) Addr() string { return s.ln.Addr().String() }

func (s *plainServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serve(c)
	}
}

func (s *plainServer) serve(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		_ = c.Close()
	}()
	r := bufio.NewReaderSize(c, 64<<10)
	w := bufio.NewWriterSize(c, 64<<10)
	var hdr [frame.HeaderLen]byte
	buf := make([]byte, 0, 1024)
	n := 0
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return
		}
		size := binary.BigEndian.Uint32(hdr[4:])
		if size > frame.DefaultMaxFrame {
			return
		}
		if cap(buf) < int(size) {
			buf = make([]byte, size)
		}
		buf = buf[:size]
		if _, err := io.ReadFull(r, buf); err != nil {
			return
		}
		n++
		if s.dropEvery > 0 && n%s.dropEvery == 0 {
			s.dropped.Add(1)
		} else {
			_, _ = w.Write(hdr[:])
			_, _ = w.Write(buf)
		}
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return
			}
		}
	}
}

func (s *plainServer) Close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	_ = s.ln.Close()
	s.wg.Wait()
}

// zinxMu serialises the moments the process-wide zinx configuration is
// adjusted for a stock server and stdout is silenced around its logo.
var zinxMu sync.Mutex

// directServer is a stock zinx v1.2.8 server: its default TLV decoder, a
// router for the echo msgID that answers with SendMsg, and zinx's default
// worker pool (10 workers, 1024-long queues). Only zinx's logging is turned
// down (its default DEBUG level hex-dumps every frame).
type directServer struct {
	zs   *znet.Server
	addr string
	once sync.Once
}

type echoRouter struct{ znet.BaseRouter }

func (echoRouter) Handle(req ziface.IRequest) {
	_ = req.GetConnection().SendMsg(req.GetMsgID(), req.GetData())
}

// startDirectDefault starts a stock zinx server with zinx's default read
// buffer (1 KiB) and no routes: what a bare zinx server costs per idle
// connection.
func startDirectDefault() (*directServer, error) { return startZinx(0, 1024) }

func startDirect(msgID uint32) (*directServer, error) { return startZinx(msgID, 4096) }

// startZinx starts a stock zinx server answering msgID (0: no route) with
// the given read buffer size.
func startZinx(msgID uint32, readBuf uint32) (*directServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: direct server: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()

	zinxMu.Lock()
	g := zconf.GlobalObject
	g.Mode = zconf.ServerModeTcp
	g.WorkerPoolSize = 10
	g.MaxWorkerTaskLen = 1024
	g.WorkerMode = ""
	g.IOReadBuffSize = readBuf
	g.MaxConn = 1 << 20
	// zinx logs every connection's EOF as an error; nothing here needs it.
	zlog.SetLogger(quietZinxLog{})
	zs := quietly(func() *znet.Server { return znet.NewServer().(*znet.Server) })
	zinxMu.Unlock()

	zs.IPVersion = "tcp"
	zs.IP = "127.0.0.1"
	zs.Port = port
	if msgID != 0 {
		zs.AddRouter(msgID, &echoRouter{})
	}
	s := &directServer{zs: zs, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	zs.Start()
	deadline := time.Now().Add(3 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.addr, 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			// Give zinx time to start the probe connection: stopping a
			// connection it accepted but has not started panics.
			time.Sleep(50 * time.Millisecond)
			return s, nil
		}
		if time.Now().After(deadline) {
			s.Close()
			return nil, fmt.Errorf("bench: direct server did not listen: %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// quietly runs fn with fd 1 pointed at /dev/null: znet.NewServer prints a
// logo and the whole configuration.
func quietly[T any](fn func() T) T {
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return fn()
	}
	defer devnull.Close()
	saved, err := syscall.Dup(1)
	if err != nil {
		return fn()
	}
	_ = syscall.Dup3(int(devnull.Fd()), 1, 0)
	defer func() {
		_ = syscall.Dup3(saved, 1, 0)
		_ = syscall.Close(saved)
	}()
	return fn()
}

func (s *directServer) Addr() string { return s.addr }

func (s *directServer) Close() {
	s.once.Do(func() {
		defer func() { _ = recover() }() // zinx v1.2.8 may panic in Stop
		s.zs.Stop()
	})
}

// quietZinxLog discards zinx's own log lines.
type quietZinxLog struct{}

func (quietZinxLog) InfoF(string, ...any)                    {}
func (quietZinxLog) ErrorF(string, ...any)                   {}
func (quietZinxLog) DebugF(string, ...any)                   {}
func (quietZinxLog) InfoFX(context.Context, string, ...any)  {}
func (quietZinxLog) ErrorFX(context.Context, string, ...any) {}
func (quietZinxLog) DebugFX(context.Context, string, ...any) {}
