// Package session is zcluster's session directory in Redis: which gate owns
// each client session, and which session each user is bound to, so that any
// node can reach a user wherever they are connected.
//
// # Keys
//
// With the default prefix "zc:":
//
//	zc:s:<sessionID>  ->  "<gateID>|<token>"   (the owning gate and its connection token)
//	zc:u:<user>       ->  "<sessionID>"
//
// Every key carries a TTL (Config.TTL) that the owning gate keeps fresh with
// Refresh, so a gate that dies leaves nothing behind for longer than the TTL.
// Inspect them with `redis-cli --scan --pattern 'zc:*'`.
//
// # Atomicity
//
// Every change that depends on the current value is a Lua script touching
// exactly one key, so it also works on Redis Cluster without CROSSSLOT
// errors. Removals are compare-and-delete: a gate that cleans up late never
// deletes a session record that a newer connection wrote, nor a user binding
// that now names another session. BindUser swaps atomically and returns the
// session it displaced, which the caller then kicks.
//
// # Caching
//
// LookupOwner and LookupUser serve routing on the hot path from a bounded
// local cache of positive answers, each kept at most Config.CacheTTL (never
// more than the TTL). Misses are not cached, and concurrent misses for one
// key share one Redis call. Owner and UserSession always ask Redis.
package session

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults for the zero fields of Config.
const (
	// DefaultPrefix starts every key.
	DefaultPrefix = "zc:"
	// DefaultTTL is the lifetime of a record that is not refreshed.
	DefaultTTL = 30 * time.Second
	// DefaultMaxCacheTTL caps the default CacheTTL, which is
	// min(DefaultMaxCacheTTL, TTL/2).
	DefaultMaxCacheTTL = 2 * time.Second
	// DefaultCacheSize is the default maximum number of cached entries per
	// kind (sessions, users).
	DefaultCacheSize = 100000
	// MinTTL is the smallest TTL New accepts.
	MinTTL = time.Second
)

// refreshBatch is how many bindings one Refresh pipeline carries; larger
// sets are sent as several pipelines in sequence.
const refreshBatch = 1000

// Config configures a Store. Zero fields take the defaults above.
type Config struct {
	// Client is the Redis to use: a *redis.Client, *redis.ClusterClient or
	// any other redis.UniversalClient. Required. The Store does not close it.
	Client redis.UniversalClient
	// Prefix starts every key. Default "zc:".
	Prefix string
	// TTL is the lifetime of every record; the owning gate must call Refresh
	// more often than that (every RefreshInterval, TTL/3). Default 30s,
	// at least 1s.
	TTL time.Duration
	// CacheTTL is how long LookupOwner and LookupUser keep a positive answer.
	// Default min(2s, TTL/2); must not exceed TTL. Negative disables the
	// cache (concurrent lookups of one key still share a Redis call).
	CacheTTL time.Duration
	// CacheSize bounds the number of cached sessions, and separately of
	// cached users. Default 100000.
	CacheSize int
	// Logger receives debug messages. Default: discard.
	Logger *slog.Logger
}

// withDefaults fills zero fields and validates the result.
func (c Config) withDefaults() (Config, error) {
	if c.Client == nil {
		return c, fmt.Errorf("%w: Client is required", ErrInvalidConfig)
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.TTL < MinTTL {
		return c, fmt.Errorf("%w: TTL %v is below %v", ErrInvalidConfig, c.TTL, MinTTL)
	}
	if c.CacheTTL == 0 {
		c.CacheTTL = min(DefaultMaxCacheTTL, c.TTL/2)
	}
	if c.CacheTTL > c.TTL {
		return c, fmt.Errorf("%w: CacheTTL %v exceeds TTL %v", ErrInvalidConfig, c.CacheTTL, c.TTL)
	}
	if c.CacheSize == 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.CacheSize < 0 {
		return c, fmt.Errorf("%w: CacheSize %d is negative", ErrInvalidConfig, c.CacheSize)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Owner names the gate that holds a session, and the token of the client
// connection there. The token tells one connection's record from a later
// one's, so a late cleanup cannot delete a newer record.
type Owner struct {
	// Gate is the owning gate's node id. Must not be empty.
	Gate string
	// Token is the connection's token (see NewToken). Must not be empty
	// nor contain '|'.
	Token string
}

// String returns the stored form, "<gate>|<token>".
func (o Owner) String() string { return o.Gate + "|" + o.Token }

// validate checks that o can be stored and read back.
func (o Owner) validate() error {
	if o.Gate == "" || o.Token == "" || strings.Contains(o.Token, "|") {
		return fmt.Errorf("%w: owner %q: want a gate and a token without '|'", ErrInvalidArgument, o.String())
	}
	return nil
}

// parseOwner reads the stored form of an Owner. The token never contains
// '|', so the last '|' separates the two.
func parseOwner(v string) (Owner, error) {
	i := strings.LastIndexByte(v, '|')
	if i <= 0 || i == len(v)-1 {
		return Owner{}, fmt.Errorf("%w: %q", ErrBadRecord, v)
	}
	return Owner{Gate: v[:i], Token: v[i+1:]}, nil
}

// Binding is one session a gate holds: its owner and the user logged in on
// it, if any.
type Binding struct {
	// Session is the session id.
	Session string
	// User is the logged-in user; empty if the session is not logged in.
	User string
	// Owner is this gate and the connection's token.
	Owner Owner
}

// Stats are counters since New. Lookups counts cache consultations (one per
// LookupOwner, two per LookupUser), CacheHits those answered from the cache,
// and RedisCalls the round trips to Redis (a pipeline counts once).
type Stats struct {
	Lookups    uint64
	CacheHits  uint64
	RedisCalls uint64
}

// Store is the session directory. Safe for concurrent use.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	ttl    time.Duration
	log    *slog.Logger

	owners *cache[Owner]  // session id -> owner
	users  *cache[string] // user -> session id

	lookups    atomic.Uint64
	cacheHits  atomic.Uint64
	redisCalls atomic.Uint64
}

// New returns a Store using cfg. It does not contact Redis; see Ping.
func New(cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Store{
		rdb:    cfg.Client,
		prefix: cfg.Prefix,
		ttl:    cfg.TTL,
		log:    cfg.Logger,
		owners: newCache[Owner](cfg.CacheTTL, cfg.CacheSize, time.Now),
		users:  newCache[string](cfg.CacheTTL, cfg.CacheSize, time.Now),
	}, nil
}

// TTL returns the lifetime of every record.
func (s *Store) TTL() time.Duration { return s.ttl }

// RefreshInterval returns how often a gate should call Refresh: TTL/3.
func (s *Store) RefreshInterval() time.Duration { return s.ttl / 3 }

// sessionKey returns the key of a session record.
func (s *Store) sessionKey(sid string) string { return s.prefix + "s:" + sid }

// userKey returns the key of a user binding.
func (s *Store) userKey(user string) string { return s.prefix + "u:" + user }

// ttlArg is the TTL as the scripts take it, in milliseconds.
func (s *Store) ttlArg() int64 { return s.ttl.Milliseconds() }

// run runs a one-key script with EVALSHA, and with EVAL if Redis does not
// know it.
func (s *Store) run(ctx context.Context, sc *redis.Script, key string, args ...any) *redis.Cmd {
	s.redisCalls.Add(1)
	r := sc.EvalSha(ctx, s.rdb, []string{key}, args...)
	if redis.HasErrorPrefix(r.Err(), "NOSCRIPT") {
		s.redisCalls.Add(1)
		r = sc.Eval(ctx, s.rdb, []string{key}, args...)
	}
	return r
}

// checkID rejects an empty session id or user name.
func checkID(what, v string) error {
	if v == "" {
		return fmt.Errorf("%w: empty %s", ErrInvalidArgument, what)
	}
	return nil
}

// BindSession records that o owns session sid, with the TTL, replacing any
// earlier record.
func (s *Store) BindSession(ctx context.Context, sid string, o Owner) error {
	if err := checkID("session id", sid); err != nil {
		return err
	}
	if err := o.validate(); err != nil {
		return err
	}
	s.owners.forget(sid)
	s.redisCalls.Add(1)
	if err := s.rdb.Set(ctx, s.sessionKey(sid), o.String(), s.ttl).Err(); err != nil {
		return fmt.Errorf("session: bind session %s: %w", sid, err)
	}
	return nil
}

// UnbindSession deletes the record of sid only if it still names o, and
// reports whether it did. A cleanup that arrives after a newer connection
// took the session over leaves the newer record alone.
func (s *Store) UnbindSession(ctx context.Context, sid string, o Owner) (bool, error) {
	if err := checkID("session id", sid); err != nil {
		return false, err
	}
	if err := o.validate(); err != nil {
		return false, err
	}
	s.owners.forget(sid)
	n, err := s.run(ctx, deleteIfScript, s.sessionKey(sid), o.String()).Int64()
	if err != nil {
		return false, fmt.Errorf("session: unbind session %s: %w", sid, err)
	}
	return n == 1, nil
}

// BindUser atomically binds user to session sid, with the TTL, and returns
// the session the user was bound to before ("" if none, or if it was sid
// itself). The caller kicks prev: its gate still holds it.
func (s *Store) BindUser(ctx context.Context, user, sid string) (prev string, err error) {
	if err := checkID("user", user); err != nil {
		return "", err
	}
	if err := checkID("session id", sid); err != nil {
		return "", err
	}
	s.users.forget(user)
	prev, err = s.run(ctx, swapScript, s.userKey(user), sid, s.ttlArg()).Text()
	if err != nil {
		return "", fmt.Errorf("session: bind user %s: %w", user, err)
	}
	if prev == sid {
		prev = ""
	}
	if prev != "" {
		// Other nodes may have cached the old binding: tell them.
		s.invalidate(ctx, "u:"+user)
	}
	return prev, nil
}

// UnbindUser deletes the binding of user only if it still names sid, and
// reports whether it did. A session that was taken over leaves the new
// binding alone.
func (s *Store) UnbindUser(ctx context.Context, user, sid string) (bool, error) {
	if err := checkID("user", user); err != nil {
		return false, err
	}
	if err := checkID("session id", sid); err != nil {
		return false, err
	}
	s.users.forget(user)
	n, err := s.run(ctx, deleteIfScript, s.userKey(user), sid).Int64()
	if err != nil {
		return false, fmt.Errorf("session: unbind user %s: %w", user, err)
	}
	if n == 1 {
		s.invalidate(ctx, "u:"+user)
	}
	return n == 1, nil
}

// Refresh re-asserts every binding of one gate, in one pipeline per 1000
// bindings rather than one round trip per session. For each binding, the
// session key is set to its owner with the TTL unless it now holds a
// different owner; the user key, if User is set, is set to the session with
// the TTL if it is missing or already equal, and left alone if it names
// another session (a takeover happened). Because missing keys are written
// again, this also restores everything after a Redis restart or FLUSHALL.
//
// lost holds the bindings that are no longer this gate's: the user is bound
// to another session, or the session record names another owner. The gate
// should close those sessions locally (without unbinding the user). On error,
// lost holds what was learnt before it.
func (s *Store) Refresh(ctx context.Context, bs []Binding) (lost []Binding, err error) {
	for _, b := range bs {
		if err := checkID("session id", b.Session); err != nil {
			return nil, err
		}
		if err := b.Owner.validate(); err != nil {
			return nil, err
		}
	}
	for start := 0; start < len(bs); start += refreshBatch {
		part := bs[start:min(start+refreshBatch, len(bs))]
		l, err := s.refresh(ctx, part)
		lost = append(lost, l...)
		if err != nil {
			return lost, err
		}
	}
	return lost, nil
}

// refreshCmds are the replies for one binding in a Refresh pipeline.
type refreshCmds struct {
	session, user *redis.Cmd // user is nil when the binding has no user
}

// refresh sends one pipeline for bs, with EVALSHA and, if Redis does not
// know the script (restarted, or a new cluster node), again with EVAL. The
// script is idempotent, so sending it twice is harmless.
func (s *Store) refresh(ctx context.Context, bs []Binding) ([]Binding, error) {
	cmds, err := s.refreshPipeline(ctx, bs, true)
	if err != nil && needsEval(cmds) {
		s.log.Debug("session: refresh script unknown to redis, sending source", "bindings", len(bs))
		cmds, err = s.refreshPipeline(ctx, bs, false)
	}
	if err != nil && !isRedisError(err) {
		// Not a reply: the connection failed, and with it every command.
		return nil, fmt.Errorf("session: refresh: %w", err)
	}
	// Every command ran on the server even if some failed, so read them all
	// and report the first failure after the lost bindings.
	var lost []Binding
	var first error
	for i, c := range cmds {
		ok, err := c.session.Int64()
		if err != nil {
			first = cmp.Or(first, fmt.Errorf("session: refresh session %s: %w", bs[i].Session, err))
			continue
		}
		uok := int64(1)
		if c.user != nil {
			if uok, err = c.user.Int64(); err != nil {
				first = cmp.Or(first, fmt.Errorf("session: refresh user %s: %w", bs[i].User, err))
				continue
			}
		}
		if ok != 1 || uok != 1 {
			lost = append(lost, bs[i])
		}
	}
	return lost, first
}

// refreshPipeline sends the assertions for bs as one pipeline.
func (s *Store) refreshPipeline(ctx context.Context, bs []Binding, sha bool) ([]refreshCmds, error) {
	eval := assertScript.Eval
	if sha {
		eval = assertScript.EvalSha
	}
	ttl := s.ttlArg()
	pipe := s.rdb.Pipeline()
	cmds := make([]refreshCmds, len(bs))
	for i, b := range bs {
		cmds[i].session = eval(ctx, pipe, []string{s.sessionKey(b.Session)}, b.Owner.String(), ttl)
		if b.User != "" {
			cmds[i].user = eval(ctx, pipe, []string{s.userKey(b.User)}, b.Session, ttl)
		}
	}
	s.redisCalls.Add(1)
	_, err := pipe.Exec(ctx)
	return cmds, err
}

// isRedisError reports whether err is an error reply from Redis (as
// opposed to a network or context error).
func isRedisError(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !errors.Is(err, redis.Nil)
}

// needsEval reports whether any reply says NOSCRIPT.
func needsEval(cmds []refreshCmds) bool {
	for _, c := range cmds {
		if redis.HasErrorPrefix(c.session.Err(), "NOSCRIPT") ||
			(c.user != nil && redis.HasErrorPrefix(c.user.Err(), "NOSCRIPT")) {
			return true
		}
	}
	return false
}

// Owner returns the owner of session sid, asking Redis. The error wraps
// ErrNotFound if there is no record.
func (s *Store) Owner(ctx context.Context, sid string) (Owner, error) {
	if err := checkID("session id", sid); err != nil {
		return Owner{}, err
	}
	s.redisCalls.Add(1)
	v, err := s.rdb.Get(ctx, s.sessionKey(sid)).Result()
	if errors.Is(err, redis.Nil) {
		return Owner{}, fmt.Errorf("%w: session %s", ErrNotFound, sid)
	}
	if err != nil {
		return Owner{}, fmt.Errorf("session: owner of %s: %w", sid, err)
	}
	o, err := parseOwner(v)
	if err != nil {
		return Owner{}, fmt.Errorf("session: owner of %s: %w", sid, err)
	}
	return o, nil
}

// existBatch is how many sessions one Exist pipeline asks about.
const existBatch = 1000

// Exist reports, for each session id, whether it has a record in Redis:
// one pipeline of EXISTS per 1000 ids (for sweeps over many sessions).
func (s *Store) Exist(ctx context.Context, sids []string) ([]bool, error) {
	out := make([]bool, 0, len(sids))
	for start := 0; start < len(sids); start += existBatch {
		chunk := sids[start:min(start+existBatch, len(sids))]
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.IntCmd, len(chunk))
		for i, sid := range chunk {
			cmds[i] = pipe.Exists(ctx, s.sessionKey(sid))
		}
		s.redisCalls.Add(1)
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("session: exist: %w", err)
		}
		for _, c := range cmds {
			out = append(out, c.Val() == 1)
		}
	}
	return out, nil
}

// UserSession returns the session user is bound to, asking Redis. The error
// wraps ErrNotFound if there is no binding.
func (s *Store) UserSession(ctx context.Context, user string) (string, error) {
	if err := checkID("user", user); err != nil {
		return "", err
	}
	s.redisCalls.Add(1)
	sid, err := s.rdb.Get(ctx, s.userKey(user)).Result()
	if errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("%w: user %s", ErrNotFound, user)
	}
	if err != nil {
		return "", fmt.Errorf("session: session of user %s: %w", user, err)
	}
	return sid, nil
}

// LookupOwner is Owner through the local cache, for routing on the hot
// path. A positive answer is kept for CacheTTL (never longer than the TTL,
// so a dead owner is not used longer than that); ErrNotFound is not cached.
// Concurrent misses for one session share one Redis call.
func (s *Store) LookupOwner(ctx context.Context, sid string) (Owner, error) {
	s.lookups.Add(1)
	o, hit, err := s.owners.get(ctx, sid, func(ctx context.Context) (Owner, error) {
		return s.Owner(ctx, sid)
	})
	if hit {
		s.cacheHits.Add(1)
	}
	return o, err
}

// LookupUser finds the session user is bound to and that session's owner,
// both through the local cache (see LookupOwner). The error wraps
// ErrNotFound if the user is not bound or the session has no record.
func (s *Store) LookupUser(ctx context.Context, user string) (sid string, o Owner, err error) {
	s.lookups.Add(1)
	sid, hit, err := s.users.get(ctx, user, func(ctx context.Context) (string, error) {
		return s.UserSession(ctx, user)
	})
	if hit {
		s.cacheHits.Add(1)
	}
	if err != nil {
		return "", Owner{}, err
	}
	o, err = s.LookupOwner(ctx, sid)
	if errors.Is(err, ErrNotFound) {
		// The binding names a session that is gone: do not keep using it.
		s.users.forget(user)
	}
	if err != nil {
		return "", Owner{}, err
	}
	return sid, o, nil
}

// Forget drops session sid from the local cache, e.g. because its gate said
// it is gone. The next lookup asks Redis.
func (s *Store) Forget(sid string) { s.owners.forget(sid) }

// ForgetUser drops user from the local cache. The next lookup asks Redis.
func (s *Store) ForgetUser(user string) { s.users.forget(user) }

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	s.redisCalls.Add(1)
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("session: ping: %w", err)
	}
	return nil
}

// Stats returns the counters.
func (s *Store) Stats() Stats {
	return Stats{
		Lookups:    s.lookups.Load(),
		CacheHits:  s.cacheHits.Load(),
		RedisCalls: s.redisCalls.Load(),
	}
}
