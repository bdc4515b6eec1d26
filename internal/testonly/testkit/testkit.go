// Package testkit holds helpers shared by zcluster's tests: real etcd and
// Redis servers on loopback, free ports, and a poller for eventual
// conditions. It is imported only from _test files.
package testkit

import (
	"testing"
	"time"

	"github.com/zcluster/zcluster/internal/runtime/freeport"
)

// CheckFor polls fn every poll until it returns nil or timeout passes, then
// fails the test with fn's last error.
func CheckFor(t testing.TB, timeout, poll time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = fn(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", timeout, err)
		}
		time.Sleep(poll)
	}
}

// FreeAddr returns a loopback address with a port that was free a moment
// ago, outside the ephemeral range (see internal/runtime/freeport) so that no
// outgoing connection takes it before the process under test binds it.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := freeport.Addr("127.0.0.1")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	return addr
}
