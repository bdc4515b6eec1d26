package registry

import (
	"context"
	"math/rand/v2"
	"time"
)

// Rendezvous hashing. Every function here is deterministic across processes
// and versions (no maphash, no random seed): two gates pick the same node for
// the same key.

const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// fnv1a64 is FNV-1a over the bytes of s.
func fnv1a64(s string) uint64 {
	h := uint64(fnvOffset64)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime64
	}
	return h
}

// mix64 is the splitmix64 finalizer: a bijection with full avalanche.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// hash64 is the per-node hash precomputed in a snapshot.
func hash64(id string) uint64 { return mix64(fnv1a64(id)) }

// weight is node n's score for a key hash; the highest score wins.
func weight(keyHash, nodeHash uint64) uint64 { return mix64(keyHash ^ nodeHash) }

// backoff is an exponential delay with full jitter in [d/2, d).
type backoff struct {
	min, max, cur time.Duration
}

func newBackoff() backoff {
	return backoff{min: 100 * time.Millisecond, max: time.Second}
}

// next returns the next delay and doubles the base.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	half := b.cur / 2
	return half + rand.N(half+1)
}

// sleep waits d or until ctx is done; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// rateLimit lets one event through per interval; owned by one goroutine.
type rateLimit struct {
	every time.Duration
	last  time.Time
}

func (r *rateLimit) allow() bool {
	now := time.Now()
	if r.last.IsZero() || now.Sub(r.last) >= r.every {
		r.last = now
		return true
	}
	return false
}
