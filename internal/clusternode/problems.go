package clusternode

import (
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Problems collects what is wrong with a configuration, so that all of it
// is reported at once rather than one mistake per start (nats-server's
// validateOptions reports the same way).
type Problems struct{ list []string }

// Addf records a problem.
func (p *Problems) Addf(format string, args ...any) {
	p.list = append(p.list, fmt.Sprintf(format, args...))
}

// Check records the problem when bad is true.
func (p *Problems) Check(bad bool, format string, args ...any) {
	if bad {
		p.Addf(format, args...)
	}
}

// Err returns nil when nothing was recorded, else one error wrapping
// sentinel that lists every problem: "<sentinel>: a; b; c".
func (p *Problems) Err(sentinel error) error {
	if len(p.list) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", sentinel, strings.Join(p.list, "; "))
}

// CheckCommon records the problems of the settings every node kind has.
func CheckCommon(p *Problems, id string, etcd *clientv3.Client, rdb redis.UniversalClient, secret []byte, insecure bool, ttl, sessionTTL time.Duration) {
	p.Check(id == "", "id is required")
	p.Check(len(id) > 255, "id is %d bytes, at most 255", len(id))
	p.Check(etcd == nil, "etcd client is required")
	p.Check(rdb == nil, "redis client is required")
	p.Check(len(secret) == 0 && !insecure, "a cluster secret is required (or run insecure for development)")
	p.Check(ttl < time.Second, "ttl %v below 1s", ttl)
	p.Check(sessionTTL < time.Second, "session ttl %v below 1s", sessionTTL)
}
