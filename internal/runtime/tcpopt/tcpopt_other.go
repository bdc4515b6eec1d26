//go:build !linux

package tcpopt

import (
	"syscall"
	"time"
)

// setUserTimeout does nothing off Linux: there, keepalive probes alone
// bound how long a silently partitioned link stays up.
func setUserTimeout(syscall.RawConn, time.Duration) error { return nil }
