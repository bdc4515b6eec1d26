package frame

import (
	"errors"
	"io"
	"sync"
	"time"
)

// ErrQueueFull is returned when a Writer's pending bytes would exceed its
// limit: the peer is not reading fast enough. The Writer is closed.
var ErrQueueFull = errors.New("frame: send queue full")

// ErrClosed is returned by a Writer that has been closed.
var ErrClosed = errors.New("frame: writer closed")

// WriteConn is what a Writer writes to: a net.Conn, or an adapter that
// sends each write as one message of a message-based transport (a
// WebSocket binary message holds whole frames). Writes never overlap.
type WriteConn interface {
	io.Writer
	SetWriteDeadline(t time.Time) error
}

// WriterConfig tunes a Writer. Zero fields take defaults.
type WriterConfig struct {
	// MaxPending bounds the bytes queued but not yet written (default 4 MiB).
	// Exceeding it closes the writer with ErrQueueFull.
	MaxPending int
	// WriteTimeout bounds one write syscall batch (default 10s).
	WriteTimeout time.Duration
	// OnError, if set, is called once, from the flushing goroutine or the
	// enqueuing caller, when the writer fails or its queue overflows.
	OnError func(error)
}

// Writer coalesces frames into as few writes as possible: frames queued
// while a write is in flight go out together in the next one. There is no
// timer; a write starts as soon as data is queued and no write is running.
// A goroutine exists only while data is pending, so idle connections cost
// none. Safe for concurrent use.
type Writer struct {
	conn WriteConn
	cfg  WriterConfig

	mu       sync.Mutex
	pending  []byte // frames waiting for the next write
	spare    []byte // the buffer the last write used, reused next time
	flushing bool
	err      error
	idle     chan struct{} // closed and replaced when a flush run ends
}

// NewWriter returns a Writer on conn. Each write hands conn one or more
// whole frames.
func NewWriter(conn WriteConn, cfg WriterConfig) *Writer {
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 4 << 20
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	return &Writer{conn: conn, cfg: cfg}
}

// WriteFrame queues one frame. It never blocks on the network.
func (w *Writer) WriteFrame(msgID uint32, payload []byte) error {
	return w.write(func(b []byte) []byte { return Append(b, msgID, payload) }, HeaderLen+len(payload))
}

// WriteRaw queues bytes that already hold one or more whole frames.
func (w *Writer) WriteRaw(raw []byte) error {
	return w.write(func(b []byte) []byte { return append(b, raw...) }, len(raw))
}

func (w *Writer) write(add func([]byte) []byte, n int) error {
	w.mu.Lock()
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return err
	}
	if len(w.pending)+n > w.cfg.MaxPending {
		w.failLocked(ErrQueueFull)
		w.mu.Unlock()
		w.notify(ErrQueueFull)
		return ErrQueueFull
	}
	w.pending = add(w.pending)
	start := !w.flushing
	if start {
		w.flushing = true
	}
	w.mu.Unlock()
	if start {
		go w.flush()
	}
	return nil
}

func (w *Writer) flush() {
	for {
		w.mu.Lock()
		if len(w.pending) == 0 || w.err != nil {
			w.flushing = false
			if w.idle != nil {
				close(w.idle)
				w.idle = nil
			}
			w.mu.Unlock()
			return
		}
		buf := w.pending
		w.pending = w.spare[:0]
		w.mu.Unlock()

		_ = w.conn.SetWriteDeadline(time.Now().Add(w.cfg.WriteTimeout))
		_, err := w.conn.Write(buf)

		w.mu.Lock()
		if cap(buf) <= 256<<10 {
			w.spare = buf[:0]
		} else {
			w.spare = nil
		}
		if err != nil && w.err == nil {
			w.failLocked(err)
			w.mu.Unlock()
			w.notify(err)
			continue
		}
		w.mu.Unlock()
	}
}

func (w *Writer) failLocked(err error) {
	w.err = err
	w.pending = nil
}

func (w *Writer) notify(err error) {
	if w.cfg.OnError != nil && !errors.Is(err, ErrClosed) {
		w.cfg.OnError(err)
	}
}

// Queued returns the bytes queued and not yet handed to a write.
func (w *Writer) Queued() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending)
}

// Flush waits until everything queued so far has been written, the writer
// failed, or timeout passed. It returns the writer's error, if any.
func (w *Writer) Flush(timeout time.Duration) error {
	w.mu.Lock()
	if !w.flushing {
		err := w.err
		w.mu.Unlock()
		return err
	}
	if w.idle == nil {
		w.idle = make(chan struct{})
	}
	idle := w.idle
	w.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
		return io.ErrShortWrite
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Close marks the writer closed; queued data not yet written is dropped.
// It does not close the connection.
func (w *Writer) Close() {
	w.mu.Lock()
	if w.err == nil {
		w.failLocked(ErrClosed)
	}
	w.mu.Unlock()
}

// Err returns the error that closed the writer, or nil.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}
