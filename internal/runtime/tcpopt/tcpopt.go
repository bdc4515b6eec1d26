// Package tcpopt configures zcluster's long-lived TCP connections (relay
// links, etcd clients) to notice a silently partitioned peer within
// seconds. Without it, a peer that vanishes with no reset (a cable, a
// firewall dropping packets, a network detached from a container) leaves
// the connection "up" while the kernel retransmits for about 15 minutes,
// and every call on it waits for its own timeout.
package tcpopt

import (
	"net"
	"strings"
	"syscall"
	"time"
)

// Dialer returns a net.Dialer with the given connect timeout whose TCP
// connections end when sent data stays unacknowledged for dead (Linux
// TCP_USER_TIMEOUT) and, when idle, are probed every dead (TCP keepalive,
// two unanswered probes end them). Non-TCP networks are dialed unchanged.
func Dialer(timeout, dead time.Duration) *net.Dialer {
	return &net.Dialer{
		Timeout:         timeout,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: dead, Interval: dead, Count: 2},
		Control: func(network, _ string, c syscall.RawConn) error {
			if !strings.HasPrefix(network, "tcp") {
				return nil
			}
			return setUserTimeout(c, dead)
		},
	}
}
