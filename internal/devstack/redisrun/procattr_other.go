//go:build !linux

package redisrun

import "syscall"

// childAttr returns nil: outside Linux there is no portable way to tie the
// child's life to ours, so Close must be called.
func childAttr() *syscall.SysProcAttr { return nil }
