// Package inbox is zcluster's reliable per-user inbox on Redis Streams: the
// store behind backend.Deliver and the gate's resume, the epochs that tell a
// client its history is intact, and the client frames of the reliable
// channel (see wire.go).
//
// # Keys
//
// With the default prefix "zc:", user alice has two keys in one Redis
// Cluster slot (hash tag {alice}):
//
//	zc:ib:{alice}   stream: one entry per message, id "<offset>-0", fields
//	                t (Redis time, ms), m (application msgID), d (payload)
//	zc:im:{alice}   hash: e (epoch), s (last offset given out)
//
// A user name holding '{' or '}' is hex-encoded inside the tag (the key
// then ends with "}x") so the tag is always the whole name.
//
// # Offsets and epochs
//
// Offsets are dense: 1, 2, 3, ... per user, from HINCRBY on the meta hash,
// so a gap between two offsets is always a lost message, never a numbering
// artefact. The epoch is a random value stored with the offset; whenever the
// meta hash is missing (new inbox, expired, Redis flushed or restarted
// without persistence) the next append or read starts a new epoch and
// offsets restart at 1, so a client resuming with the old epoch learns its
// history is gone. Appending, numbering and creating the epoch are one Lua
// script (atomic).
//
// # Bounds
//
// An inbox keeps its newest MaxLen messages (XADD MAXLEN, exact), and
// drops messages older than TTL from its head on every append and read; the
// stream key itself expires TTL after the last append. The meta hash lives
// MetaTTLFactor times longer, so a client that comes back after its messages
// expired is told "gap" only if it actually missed some.
//
// # Durability
//
// Append returns once Redis has executed the script: the message is in
// Redis memory, replicated to replicas asynchronously, on disk according to
// Redis's persistence settings (appendonly yes with appendfsync everysec
// loses at most about a second of appends if Redis itself crashes;
// appendfsync always loses none; no persistence loses everything on a
// Redis restart, which clients see as a new epoch, never as silence).
package inbox

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults for the zero fields of Config.
const (
	// DefaultPrefix starts every key (the session directory's prefix).
	DefaultPrefix = "zc:"
	// DefaultMaxLen is how many messages an inbox keeps.
	DefaultMaxLen = 1000
	// DefaultTTL is how long a message is kept.
	DefaultTTL = 24 * time.Hour
	// MetaTTLFactor: the epoch and last offset outlive the messages by this
	// factor of TTL.
	MetaTTLFactor = 7
	// MaxPayload is the largest application payload Append takes.
	MaxPayload = 64 << 10
	// DefaultMaxPendingBytes is the default of Config.MaxPendingBytes.
	DefaultMaxPendingBytes = 64 << 20
)

// Sentinel errors.
var (
	// ErrInvalidConfig is returned (wrapped) by New for a Config it cannot use.
	ErrInvalidConfig = errors.New("inbox: invalid config")
	// ErrInvalidArgument is returned (wrapped) for an empty user or an
	// oversized payload.
	ErrInvalidArgument = errors.New("inbox: invalid argument")
	// ErrBadReply is returned (wrapped) when Redis answers a script with
	// something this package did not write (a foreign key of another type).
	ErrBadReply = errors.New("inbox: unexpected reply from redis")
	// ErrBusy is returned (wrapped) by AppendAsync when Config.MaxPendingBytes
	// of appends are already waiting for Redis.
	ErrBusy = errors.New("inbox: too many appends waiting for redis")
	// ErrClosed is returned (wrapped) by appends made after Close.
	ErrClosed = errors.New("inbox: store closed")
)

// Config configures a Store.
type Config struct {
	// Client is the Redis to use (single server or cluster). Required; the
	// Store does not close it.
	Client redis.UniversalClient
	// Prefix starts every key (default "zc:"); it must not hold '{' or '}'.
	Prefix string
	// MaxLen is how many messages an inbox keeps (default 1000).
	MaxLen int
	// TTL is how long a message is kept (default 24h, at least 1s).
	TTL time.Duration
	// MaxPendingBytes bounds the appends accepted and not yet completed
	// (their payloads plus 128 bytes each; default 64 MiB); beyond it
	// AppendAsync answers ErrBusy.
	MaxPendingBytes int64
}

func (c Config) withDefaults() (Config, error) {
	if c.Client == nil {
		return c, fmt.Errorf("%w: Client is required", ErrInvalidConfig)
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if strings.ContainsAny(c.Prefix, "{}") {
		return c, fmt.Errorf("%w: prefix %q holds a brace (it would change the keys' hash tag)", ErrInvalidConfig, c.Prefix)
	}
	if c.MaxLen == 0 {
		c.MaxLen = DefaultMaxLen
	}
	if c.MaxLen < 1 {
		return c, fmt.Errorf("%w: MaxLen %d must be positive", ErrInvalidConfig, c.MaxLen)
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.MaxPendingBytes == 0 {
		c.MaxPendingBytes = DefaultMaxPendingBytes
	}
	if c.MaxPendingBytes < 0 {
		return c, fmt.Errorf("%w: MaxPendingBytes %d is negative", ErrInvalidConfig, c.MaxPendingBytes)
	}
	if c.TTL < time.Second {
		return c, fmt.Errorf("%w: TTL %v is below 1s", ErrInvalidConfig, c.TTL)
	}
	return c, nil
}

// Entry is one stored message.
type Entry struct {
	Offset  uint64
	MsgID   uint32
	Payload []byte
}

// Position is where an append landed.
type Position struct {
	Offset uint64
	Epoch  uint64
}

// Page is the result of Read.
type Page struct {
	// Epoch is the inbox's epoch (created by the read if it had none).
	Epoch uint64
	// Last is the last offset given out in this epoch (0: none yet).
	Last uint64
	// First is the oldest offset still stored (Last+1 if none is).
	First uint64
	// Entries are the stored messages after the offset asked for, oldest
	// first, at most the limit asked for.
	Entries []Entry
}

// Stats are counters since New. RedisCalls counts round trips (a pipeline
// counts once); Appends counts appended messages; Scripts counts the append
// scripts run (one per user per pipeline: a user's appends queued together
// are stored by one script).
type Stats struct {
	RedisCalls uint64
	Appends    uint64
	Scripts    uint64
	// Failed counts appends that got an error from Redis (the message may
	// or may not be stored); Busy those refused with ErrBusy.
	Failed uint64
	Busy   uint64
	// PendingBytes is what the appends accepted and not yet completed are
	// charged now (see Config.MaxPendingBytes).
	PendingBytes int64
}

// Store reads and appends users' inboxes. Safe for concurrent use.
//
// Appends go through lanes (a user always to the same one): a lane sends
// what queued in it as one pipeline, waits for the answer, then sends what
// queued meanwhile (group commit). One pipeline per lane in flight keeps
// every user's appends in the order they were made; the lanes run in
// parallel. A lane's goroutine runs while the lane has work and is waited
// for by Close.
type Store struct {
	cfg        Config
	ttlMS      int64
	metaTTLMS  int64
	redisCalls atomic.Uint64
	appends    atomic.Uint64
	scripts    atomic.Uint64
	failed     atomic.Uint64
	busy       atomic.Uint64

	lanes   [numLanes]lane
	pending atomic.Int64 // bytes charged by appends accepted and not completed
	wg      sync.WaitGroup
	closeMu sync.RWMutex // held for reading while an append is accepted
	closed  bool
}

// New returns a Store. It does not contact Redis.
func New(cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Store{cfg: cfg, ttlMS: cfg.TTL.Milliseconds(), metaTTLMS: MetaTTLFactor * cfg.TTL.Milliseconds()}, nil
}

// MaxLen returns how many messages an inbox keeps.
func (s *Store) MaxLen() int { return s.cfg.MaxLen }

// TTL returns how long a message is kept.
func (s *Store) TTL() time.Duration { return s.cfg.TTL }

// Stats returns the counters.
func (s *Store) Stats() Stats {
	return Stats{RedisCalls: s.redisCalls.Load(), Appends: s.appends.Load(), Scripts: s.scripts.Load(),
		Failed: s.failed.Load(), Busy: s.busy.Load(), PendingBytes: s.pending.Load()}
}

// tag returns the hash tag content for user.
func tag(user string) string {
	if strings.ContainsAny(user, "{}") {
		return hex.EncodeToString([]byte(user)) + "}x"
	}
	return user + "}"
}

// StreamKey returns the key of user's stream.
func (s *Store) StreamKey(user string) string { return s.cfg.Prefix + "ib:{" + tag(user) }

// MetaKey returns the key of user's meta hash (epoch and last offset).
func (s *Store) MetaKey(user string) string { return s.cfg.Prefix + "im:{" + tag(user) }

func checkUser(user string) error {
	if user == "" {
		return fmt.Errorf("%w: empty user", ErrInvalidArgument)
	}
	return nil
}

// maxLuaOffset caps offsets sent to the scripts (Lua numbers are doubles).
const maxLuaOffset = 1 << 52

// Read returns user's inbox state and at most limit messages after offset
// after (0: from the oldest stored), oldest first. An inbox that has no
// epoch gets one (see the package doc).
func (s *Store) Read(ctx context.Context, user string, after uint64, limit int) (Page, error) {
	if err := checkUser(user); err != nil {
		return Page{}, err
	}
	after = min(after, maxLuaOffset)
	limit = max(limit, 1)
	keys := []string{s.StreamKey(user), s.MetaKey(user)}
	args := []any{after, limit, s.ttlMS, s.metaTTLMS, strconv.FormatUint(NewEpoch(user), 10)}
	s.redisCalls.Add(1)
	c := readScript.EvalSha(ctx, s.cfg.Client, keys, args...)
	if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
		s.redisCalls.Add(1)
		c = readScript.Eval(ctx, s.cfg.Client, keys, args...)
	}
	p, err := parseRead(c)
	if err != nil {
		return Page{}, fmt.Errorf("inbox: read %s: %w", user, err)
	}
	return p, nil
}

func parseRead(c *redis.Cmd) (Page, error) {
	v, err := c.Slice()
	if err != nil {
		return Page{}, err
	}
	bad := func() (Page, error) { return Page{}, fmt.Errorf("%w: %.200v", ErrBadReply, v) }
	if len(v) != 4 {
		return bad()
	}
	es, ok1 := v[0].(string)
	last, ok2 := v[1].(int64)
	first, ok3 := v[2].(int64)
	ents, ok4 := v[3].([]any)
	ep, err := strconv.ParseUint(es, 10, 64)
	if !ok1 || !ok2 || !ok3 || !ok4 || err != nil || last < 0 || first < 1 {
		return bad()
	}
	p := Page{Epoch: ep, Last: uint64(last), First: uint64(first), Entries: make([]Entry, 0, len(ents))}
	for _, raw := range ents {
		e, ok := parseEntry(raw)
		if !ok {
			return bad()
		}
		p.Entries = append(p.Entries, e)
	}
	return p, nil
}

// parseEntry reads one XRANGE entry: [id, [t, ms, m, msgID, d, payload]].
func parseEntry(raw any) (Entry, bool) {
	pair, ok := raw.([]any)
	if !ok || len(pair) != 2 {
		return Entry{}, false
	}
	id, ok := pair[0].(string)
	fields, ok2 := pair[1].([]any)
	if !ok || !ok2 {
		return Entry{}, false
	}
	offs, _, _ := strings.Cut(id, "-")
	off, err := strconv.ParseUint(offs, 10, 64)
	if err != nil || off == 0 {
		return Entry{}, false
	}
	e := Entry{Offset: off}
	for i := 0; i+1 < len(fields); i += 2 {
		k, _ := fields[i].(string)
		val, _ := fields[i+1].(string)
		switch k {
		case "m":
			m, err := strconv.ParseUint(val, 10, 32)
			if err != nil {
				return Entry{}, false
			}
			e.MsgID = uint32(m)
		case "d":
			e.Payload = []byte(val)
		}
	}
	return e, true
}

// Head is an inbox's epoch and last offset, as Heads reports them.
type Head struct {
	// Epoch is 0 if the inbox has no meta (expired or flushed).
	Epoch uint64
	Last  uint64
}

// headsBatch is how many users one Heads pipeline carries.
const headsBatch = 1000

// Heads returns the epoch and last offset of every user's inbox, one
// pipeline (HMGET per user) per 1000 users. A user whose inbox has no meta
// gets a zero Head.
func (s *Store) Heads(ctx context.Context, users []string) ([]Head, error) {
	out := make([]Head, 0, len(users))
	for start := 0; start < len(users); start += headsBatch {
		part, err := s.heads(ctx, users[start:min(start+headsBatch, len(users))])
		if err != nil {
			return nil, err
		}
		out = append(out, part...)
	}
	return out, nil
}

func (s *Store) heads(ctx context.Context, users []string) ([]Head, error) {
	pipe := s.cfg.Client.Pipeline()
	cmds := make([]*redis.SliceCmd, len(users))
	for i, u := range users {
		cmds[i] = pipe.HMGet(ctx, s.MetaKey(u), "e", "s")
	}
	s.redisCalls.Add(1)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("inbox: heads: %w", err)
	}
	out := make([]Head, len(users))
	for i, c := range cmds {
		v := c.Val()
		if len(v) != 2 {
			continue
		}
		es, _ := v[0].(string)
		ss, _ := v[1].(string)
		ep, err1 := strconv.ParseUint(es, 10, 64)
		last, err2 := strconv.ParseUint(ss, 10, 64)
		if err1 == nil && err2 == nil {
			out[i] = Head{Epoch: ep, Last: last}
		}
	}
	return out, nil
}

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.cfg.Client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("inbox: ping: %w", err)
	}
	return nil
}
