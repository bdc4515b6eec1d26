package inbox

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/zcluster/zcluster/internal/runtime/waitgroup"
)

const (
	// numLanes is how many append pipelines may be in flight at once.
	numLanes = 8
	// maxBatch is how many appends one pipeline carries at most.
	maxBatch = 256
	// reqOverhead is what a pending append is charged on top of its payload.
	reqOverhead = 128
	// batchTimeout bounds one pipeline.
	batchTimeout = 5 * time.Second
)

// lane is one ordered stream of append pipelines (see Store).
type lane struct {
	mu      sync.Mutex
	queue   []*appendReq
	running bool          // a goroutine sends this lane's pipelines
	last    chan struct{} // closed once the completions of the lane's last pipeline have run
}

// appendReq is one append waiting for its pipeline.
type appendReq struct {
	user    string
	msgID   uint32
	payload []byte
	done    func(Position, error)
	pos     Position
	err     error
}

// laneOf returns the lane of user (FNV-1a).
func laneOf(user string) int {
	h := uint32(2166136261)
	for i := 0; i < len(user); i++ {
		h ^= uint32(user[i])
		h *= 16777619
	}
	return int(h % numLanes)
}

// AppendAsync queues one message for user's inbox and returns at once.
// done is called once Redis has run the append, with the message's offset
// and the inbox's epoch, or with the error (the message may or may not be
// stored then). done runs on a goroutine of the Store, after the done of
// every earlier AppendAsync for the same user, and must not block for long:
// it delays the completions of the users that share its lane.
//
// Appends for one user are stored in the order of the AppendAsync calls
// (a caller that needs its messages in order must make the calls in
// order). It fails at once, without calling done, for an invalid argument,
// after Close (ErrClosed), and when Config.MaxPendingBytes of appends are
// waiting (ErrBusy). payload must not be modified until done is called.
func (s *Store) AppendAsync(user string, msgID uint32, payload []byte, done func(Position, error)) error {
	if err := checkUser(user); err != nil {
		return err
	}
	if len(payload) > MaxPayload {
		return fmt.Errorf("%w: payload of %d bytes exceeds %d", ErrInvalidArgument, len(payload), MaxPayload)
	}
	cost := int64(len(payload) + reqOverhead)
	if n := s.pending.Add(cost); n > s.cfg.MaxPendingBytes && n != cost {
		s.pending.Add(-cost)
		s.busy.Add(1)
		return fmt.Errorf("%w: %d bytes pending", ErrBusy, n-cost)
	}
	r := &appendReq{user: user, msgID: msgID, payload: payload, done: done}
	l := &s.lanes[laneOf(user)]
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		s.pending.Add(-cost)
		return fmt.Errorf("%w: append for %s", ErrClosed, user)
	}
	l.mu.Lock()
	l.queue = append(l.queue, r)
	start := !l.running
	if start {
		l.running = true
		s.wg.Add(1)
	}
	l.mu.Unlock()
	s.closeMu.RUnlock()
	if start {
		go s.runLane(l)
	}
	return nil
}

// Append stores one message in user's inbox and returns its offset and the
// inbox's epoch. It returns once Redis has run the append (see the package
// doc for what that means for durability), or when ctx ends. Concurrent
// calls share pipelines. On an error the message may or may not be stored.
func (s *Store) Append(ctx context.Context, user string, msgID uint32, payload []byte) (Position, error) {
	type result struct {
		pos Position
		err error
	}
	ch := make(chan result, 1)
	if err := s.AppendAsync(user, msgID, payload, func(p Position, err error) { ch <- result{p, err} }); err != nil {
		return Position{}, err
	}
	select {
	case r := <-ch:
		return r.pos, r.err
	case <-ctx.Done():
		return Position{}, fmt.Errorf("inbox: append for %s (it may still be stored): %w", user, ctx.Err())
	}
}

// Close refuses new appends and waits until every accepted one has
// completed (its done has run), or until ctx ends.
func (s *Store) Close(ctx context.Context) error {
	s.closeMu.Lock()
	s.closed = true
	s.closeMu.Unlock()
	if err := waitgroup.Wait(ctx, &s.wg); err != nil {
		return fmt.Errorf("inbox: close: appends still waiting for redis: %w", err)
	}
	return nil
}

// runLane sends l's queued appends, a pipeline at a time, until l is empty.
func (s *Store) runLane(l *lane) {
	defer s.wg.Done()
	for {
		l.mu.Lock()
		n := min(len(l.queue), maxBatch)
		if n == 0 {
			l.running = false
			l.mu.Unlock()
			return
		}
		batch := make([]*appendReq, n)
		copy(batch, l.queue)
		rest := copy(l.queue, l.queue[n:])
		clear(l.queue[rest:])
		l.queue = l.queue[:rest]
		prev, mine := l.last, make(chan struct{})
		l.last = mine
		l.mu.Unlock()
		s.sendBatch(batch)
		// The completions run beside the next pipeline, after the previous
		// pipeline's (so a user's dones keep their order).
		s.wg.Add(1)
		go s.complete(batch, prev, mine)
	}
}

// complete calls the dones of batch once those of the lane's previous
// pipeline (prev) have run, then closes mine.
func (s *Store) complete(batch []*appendReq, prev, mine chan struct{}) {
	defer s.wg.Done()
	if prev != nil {
		<-prev
	}
	for _, r := range batch {
		r.done(r.pos, r.err)
		s.pending.Add(-int64(len(r.payload) + reqOverhead))
	}
	close(mine)
}

// groupByUser splits batch into runs of one user each, in the order of
// each user's first append; a user's appends keep their order.
func groupByUser(batch []*appendReq) [][]*appendReq {
	idx := make(map[string]int, len(batch))
	var groups [][]*appendReq
	for _, r := range batch {
		i, ok := idx[r.user]
		if !ok {
			i = len(groups)
			idx[r.user] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], r)
	}
	return groups
}

// sendBatch runs one pipeline with one append script per user (EVALSHA,
// and EVAL again for those Redis did not know the script for) and sets
// each request's position or error.
func (s *Store) sendBatch(batch []*appendReq) {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	groups := groupByUser(batch)
	cmds := s.appendPipeline(ctx, groups, true)
	var retry []int
	for i, c := range cmds {
		if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			retry = append(retry, i)
		}
	}
	if len(retry) > 0 {
		sub := make([][]*appendReq, len(retry))
		for j, i := range retry {
			sub[j] = groups[i]
		}
		again := s.appendPipeline(ctx, sub, false)
		for j, i := range retry {
			cmds[i] = again[j]
		}
	}
	for i, g := range groups {
		first, err := parseAppend(cmds[i])
		for j, r := range g {
			if err != nil {
				r.err = fmt.Errorf("inbox: append for %s: %w", r.user, err)
				s.failed.Add(1)
				continue
			}
			r.pos = Position{Offset: first.Offset + uint64(j), Epoch: first.Epoch}
		}
		if err == nil {
			s.appends.Add(uint64(len(g)))
		}
	}
}

// appendPipeline sends one append script per group (one user's appends,
// in order) in one pipeline.
func (s *Store) appendPipeline(ctx context.Context, groups [][]*appendReq, sha bool) []*redis.Cmd {
	eval := appendScript.Eval
	if sha {
		eval = appendScript.EvalSha
	}
	pipe := s.cfg.Client.Pipeline()
	cmds := make([]*redis.Cmd, len(groups))
	for i, g := range groups {
		user := g[0].user
		args := make([]any, 0, 4+2*len(g))
		args = append(args, s.cfg.MaxLen, s.ttlMS, s.metaTTLMS, strconv.FormatUint(NewEpoch(user), 10))
		for _, r := range g {
			args = append(args, r.msgID, r.payload)
		}
		cmds[i] = eval(ctx, pipe, []string{s.StreamKey(user), s.MetaKey(user)}, args...)
	}
	s.redisCalls.Add(1)
	s.scripts.Add(uint64(len(groups)))
	_, _ = pipe.Exec(ctx) // each command carries its own error
	return cmds
}

// parseAppend reads an append script's answer: the offset of the first
// message it stored and the epoch.
func parseAppend(c *redis.Cmd) (Position, error) {
	v, err := c.Slice()
	if err != nil {
		return Position{}, err
	}
	if len(v) != 2 {
		return Position{}, fmt.Errorf("%w: %v", ErrBadReply, v)
	}
	off, ok1 := v[0].(int64)
	es, ok2 := v[1].(string)
	ep, err := strconv.ParseUint(es, 10, 64)
	if !ok1 || !ok2 || err != nil || off < 1 {
		return Position{}, fmt.Errorf("%w: %v", ErrBadReply, v)
	}
	return Position{Offset: uint64(off), Epoch: ep}, nil
}
