//go:build linux

package redisrun

import "syscall"

// childAttr makes the kernel kill the redis-server child when the thread
// that started it (and so, normally, this process) dies.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
