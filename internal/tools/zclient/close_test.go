package zclient

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/zcluster/zcluster/internal/runtime/frame"
)

// A reader whose frame buffer is full must still end when the caller
// closes the connection without draining Frames.
func TestCloseEndsReaderWithUndrainedFrames(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	end := make(chan struct{})
	defer close(end)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			return
		}
		defer s.Close()
		var b []byte
		for range 4096 + 10 {
			b = frame.Append(b, 1, nil)
		}
		_, _ = s.Write(b)
		<-end
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(c.frames) < cap(c.frames) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	_ = c.Close()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("reader still running 5s after Close with a full frame buffer")
	}
}
