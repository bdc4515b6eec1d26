package tcpopt

import (
	"syscall"
	"time"
)

// tcpUserTimeout is TCP_USER_TIMEOUT from linux/tcp.h (not in package
// syscall).
const tcpUserTimeout = 0x12

// setUserTimeout makes the kernel abort the connection when sent data stays
// unacknowledged for d, so a write to a silently partitioned peer ends the
// link instead of being retransmitted for minutes.
func setUserTimeout(c syscall.RawConn, d time.Duration) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout, int(d.Milliseconds()))
	})
	if err != nil {
		return err
	}
	return serr
}
