package session

import (
	"context"
	"strings"
	"time"
)

// Cache invalidation across nodes. A takeover (BindUser replacing another
// session) and an unbind publish "u:<user>" on the channel <prefix>inval;
// every node running RunInvalidation drops that user from its cache at once,
// instead of trusting the stale entry for up to CacheTTL. Messages lost while
// the subscription reconnects are still bounded by CacheTTL.

func (s *Store) invalidationChannel() string { return s.prefix + "inval" }

// invalidate publishes one invalidation; failure only costs cache freshness.
func (s *Store) invalidate(ctx context.Context, what string) {
	s.redisCalls.Add(1)
	if err := s.rdb.Publish(ctx, s.invalidationChannel(), what).Err(); err != nil {
		s.log.Debug("session: publish invalidation failed", "what", what, "cause", err)
	}
}

// RunInvalidation subscribes to other nodes' invalidations and applies them
// to the local cache until ctx is cancelled. Run it in a goroutine the caller
// owns.
func (s *Store) RunInvalidation(ctx context.Context) {
	for ctx.Err() == nil {
		ps := s.rdb.Subscribe(ctx, s.invalidationChannel())
		if _, err := ps.Receive(ctx); err != nil {
			_ = ps.Close()
			s.log.Debug("session: invalidation subscribe failed; retrying", "cause", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		// Whatever was published before the subscription is not known here.
		s.owners.clear()
		s.users.clear()
		ch := ps.Channel()
	loop:
		for {
			select {
			case <-ctx.Done():
				break loop
			case m, ok := <-ch:
				if !ok {
					break loop
				}
				kind, key, _ := strings.Cut(m.Payload, ":")
				switch kind {
				case "u":
					s.users.forget(key)
				case "s":
					s.owners.forget(key)
				}
			}
		}
		_ = ps.Close()
	}
}
