package frame

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func TestDecoderSplitsAndJoins(t *testing.T) {
	var stream []byte
	for i := 0; i < 100; i++ {
		stream = Append(stream, uint32(i), bytes.Repeat([]byte{byte(i)}, i))
	}
	// Feed in every chunk size from 1 to 37 bytes: frames split across
	// chunks and coalesced in one chunk must all come out, in order.
	for chunk := 1; chunk <= 37; chunk++ {
		d := NewDecoder(1024)
		next := 0
		for off := 0; off < len(stream); off += chunk {
			end := min(off+chunk, len(stream))
			err := d.Feed(stream[off:end], func(id uint32, p []byte) error {
				if int(id) != next || len(p) != next || (next > 0 && p[0] != byte(next)) {
					t.Fatalf("chunk %d: frame %d: got id %d len %d", chunk, next, id, len(p))
				}
				next++
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		if next != 100 || d.Buffered() != 0 {
			t.Fatalf("chunk %d: got %d frames, %d bytes left", chunk, next, d.Buffered())
		}
	}
}

func TestDecoderRefusesHugeLengthWithoutAllocating(t *testing.T) {
	d := NewDecoder(64 << 10)
	hdr := make([]byte, 8)
	binary.BigEndian.PutUint32(hdr, 1)
	binary.BigEndian.PutUint32(hdr[4:], 2<<30) // 2 GiB
	err := d.Feed(hdr, func(uint32, []byte) error { t.Fatal("frame delivered"); return nil })
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	if d.Buffered() > 8 {
		t.Fatalf("decoder buffered %d bytes", d.Buffered())
	}
	// One byte over the limit is refused too; exactly the limit is fine.
	d = NewDecoder(16)
	if err := d.Feed(Append(nil, 1, make([]byte, 17)), func(uint32, []byte) error { return nil }); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("17 > 16: err = %v", err)
	}
	d = NewDecoder(16)
	if err := d.Feed(Append(nil, 1, make([]byte, 16)), func(uint32, []byte) error { return nil }); err != nil {
		t.Fatalf("16 == limit: %v", err)
	}
}

func FuzzDecoder(f *testing.F) {
	f.Add(Append(nil, 1, []byte("hello")))
	f.Add([]byte{0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte("garbage bytes that are not a frame"))
	f.Fuzz(func(t *testing.T, data []byte) {
		d := NewDecoder(256)
		_ = d.Feed(data, func(_ uint32, p []byte) error {
			if len(p) > 256 {
				t.Fatalf("payload %d over limit", len(p))
			}
			return nil
		})
		if d.Buffered() > 256+HeaderLen {
			t.Fatalf("buffered %d", d.Buffered())
		}
	})
}

func TestWriterCoalescesAndBounds(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	var gotErr error
	w := NewWriter(a, WriterConfig{MaxPending: 1 << 10, OnError: func(err error) { gotErr = err }})
	got := make(chan []byte, 1)
	go func() {
		buf, _ := io.ReadAll(io.LimitReader(b, int64(10*(HeaderLen+3))))
		got <- buf
	}()
	for i := 0; i < 10; i++ {
		if err := w.WriteFrame(uint32(i), []byte("abc")); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case buf := <-got:
		var want []byte
		for i := 0; i < 10; i++ {
			want = Append(want, uint32(i), []byte("abc"))
		}
		if !bytes.Equal(buf, want) {
			t.Fatalf("stream differs")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("frames not written")
	}
	// Nobody reads b any more: the queue fills and the writer fails.
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		err = w.WriteFrame(1, make([]byte, 100))
	}
	if !errors.Is(err, ErrQueueFull) || !errors.Is(gotErr, ErrQueueFull) {
		t.Fatalf("err = %v, OnError got %v; want ErrQueueFull", err, gotErr)
	}
	if err := w.WriteFrame(1, nil); err == nil {
		t.Fatal("write after failure succeeded")
	}
}

func BenchmarkDecoder(b *testing.B) {
	var stream []byte
	for i := 0; i < 64; i++ {
		stream = Append(stream, 4, make([]byte, 64))
	}
	d := NewDecoder(0)
	b.ReportAllocs()
	b.SetBytes(int64(len(stream)))
	for i := 0; i < b.N; i++ {
		_ = d.Feed(stream, func(uint32, []byte) error { return nil })
	}
}
