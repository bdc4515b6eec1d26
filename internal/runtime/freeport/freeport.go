// Package freeport picks listen ports for "any port" requests outside the
// kernel's ephemeral range.
//
// A port found free by listening on :0 comes from the ephemeral range, the
// same range the kernel hands to outgoing connections. zinx binds the port
// itself a moment later and panics (in a goroutine: the process dies) if it
// is taken meanwhile, which a busy test or node making thousands of
// connections does now and then. Ports below the ephemeral range are never
// taken by outgoing connections.
package freeport

import (
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
)

// Range is where ports are picked: below Linux's default ephemeral range
// (32768-60999) and below 20000, where the Redis Cluster test helper picks
// its ports (and their cluster bus ports, +10000).
const (
	Low  = 10000
	High = 20000
)

// ErrNone is returned when no port of the range could be bound.
var ErrNone = errors.New("freeport: no free port found")

// Pick returns a port of [Low, High) on host that was free a moment ago.
func Pick(host string) (int, error) {
	ports, err := PickN(host, 1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// PickN returns n distinct such ports: all are held open together while
// picking, so none repeats.
func PickN(host string, n int) ([]int, error) {
	held := make([]net.Listener, 0, n)
	defer func() {
		for _, ln := range held {
			_ = ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for tries := 0; len(ports) < n && tries < 200*n; tries++ {
		p := Low + rand.IntN(High-Low)
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err != nil {
			continue
		}
		held = append(held, ln)
		ports = append(ports, p)
	}
	if len(ports) < n {
		return nil, ErrNone
	}
	return ports, nil
}

// Addr returns "host:port" with a port from Pick.
func Addr(host string) (string, error) {
	p, err := Pick(host)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(host, strconv.Itoa(p)), nil
}
