package session

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// ConnsKey returns the Redis key where gate publishes its open client
// connections by transport: a hash, one field per transport ("tcp", "ws",
// "kcp") holding a count, with a TTL. `zcluster top` reads it.
func ConnsKey(prefix, gate string) string { return prefix + "conns:{" + gate + "}" }

// PublishConns records gate's open client connections by transport; the
// record expires after ttl unless published again.
func (s *Store) PublishConns(ctx context.Context, gate string, counts map[string]int, ttl time.Duration) error {
	key := ConnsKey(s.prefix, gate)
	fields := make([]any, 0, 2*len(counts))
	for tr, n := range counts {
		fields = append(fields, tr, n)
	}
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, key)
		if len(fields) > 0 {
			p.HSet(ctx, key, fields...)
			p.PExpire(ctx, key, ttl)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("session: publish connections of %s: %w", gate, err)
	}
	return nil
}

// ReadConns returns the connections by transport gate last published
// under prefix, or nil when it has published none (or they expired).
func ReadConns(ctx context.Context, rdb redis.UniversalClient, prefix, gate string) (map[string]int, error) {
	m, err := rdb.HGetAll(ctx, ConnsKey(prefix, gate)).Result()
	if err != nil {
		return nil, fmt.Errorf("session: read connections of %s: %w", gate, err)
	}
	if len(m) == 0 {
		return nil, nil
	}
	out := make(map[string]int, len(m))
	for tr, v := range m {
		n, err := strconv.Atoi(v)
		if err != nil {
			continue
		}
		out[tr] = n
	}
	return out, nil
}
