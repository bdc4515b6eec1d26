package tcpopt

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestDialerSetsUserTimeout checks that a dialed TCP connection carries
// TCP_USER_TIMEOUT and keepalive, the options that end it when its peer
// goes silent (the Docker partition tests in deploy/ show the effect).
func TestDialerSetsUserTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			_, _ = c.Read(make([]byte, 1))
		}
	}()
	conn, err := Dialer(time.Second, 1500*time.Millisecond).DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rc, err := conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ut, ka int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		ut, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout)
		if gerr == nil {
			ka, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
		}
	}); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	if ut != 1500 || ka != 1 {
		t.Fatalf("TCP_USER_TIMEOUT %d ms, SO_KEEPALIVE %d; want 1500 and 1", ut, ka)
	}
}
