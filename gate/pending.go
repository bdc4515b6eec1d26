package gate

import (
	"sync"
	"time"
)

// pendingRequest is a client message forwarded to a backend and not yet
// answered with a Done. The gate answers it with an error frame if its node
// goes away or it times out, so no request is ever left unanswered.
type pendingRequest struct {
	session  string
	msgID    uint32
	node     string
	deadline time.Time
	// reason replaces the timeout text once the node is known to be gone.
	reason string
	// slots is the client connection's in-flight semaphore: the request
	// holds one token from add until it leaves the table.
	slots chan struct{}
}

// release gives the request's in-flight token back to its connection.
func (r *pendingRequest) release() {
	select {
	case <-r.slots:
	default:
	}
}

// pendingShards spreads the table over independently locked maps: every
// forwarded request is added on a client's reader goroutine and removed on
// a relay link's, so one lock would be taken twice per request by every
// reader of the gate.
const pendingShards = 32

// pendingTable tracks forwarded requests by sequence number. Sequence
// numbers are consecutive, so seq % pendingShards spreads them evenly.
type pendingTable struct {
	shards [pendingShards]pendingShard
}

type pendingShard struct {
	mu sync.Mutex
	m  map[uint64]pendingRequest
	_  [48]byte // keep neighbouring shards' locks off one cache line
}

func newPendingTable() *pendingTable {
	p := &pendingTable{}
	for i := range p.shards {
		p.shards[i].m = make(map[uint64]pendingRequest)
	}
	return p
}

func (p *pendingTable) shard(seq uint64) *pendingShard { return &p.shards[seq%pendingShards] }

func (p *pendingTable) add(seq uint64, r pendingRequest) {
	s := p.shard(seq)
	s.mu.Lock()
	s.m[seq] = r
	s.mu.Unlock()
}

// done removes seq if it was forwarded to node; a Done from another node is
// ignored (a peer cannot finish requests it was not given).
func (p *pendingTable) done(seq uint64, node []byte) (pendingRequest, bool) {
	return p.take(seq, func(r *pendingRequest) bool { return r.node == string(node) })
}

// doneFor is done for a final reply: it also requires the request to be
// the session's.
func (p *pendingTable) doneFor(seq uint64, node, session []byte) (pendingRequest, bool) {
	return p.take(seq, func(r *pendingRequest) bool {
		return r.node == string(node) && r.session == string(session)
	})
}

// answers reports whether seq is an open request forwarded to node for
// session (an intermediate reply may be delivered).
func (p *pendingTable) answers(seq uint64, node, session []byte) bool {
	s := p.shard(seq)
	s.mu.Lock()
	r, ok := s.m[seq]
	s.mu.Unlock()
	return ok && r.node == string(node) && r.session == string(session)
}

// remove takes seq out of the table (its send failed), releasing its
// in-flight token, and reports whether it was still there (if not, an
// answer or the sweep took it, and released the token).
func (p *pendingTable) remove(seq uint64) bool {
	_, ok := p.take(seq, func(*pendingRequest) bool { return true })
	return ok
}

// take removes seq and releases its in-flight token if it is open and
// match accepts it.
func (p *pendingTable) take(seq uint64, match func(*pendingRequest) bool) (pendingRequest, bool) {
	s := p.shard(seq)
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.m[seq]
	if !ok || !match(&r) {
		return pendingRequest{}, false
	}
	delete(s.m, seq)
	r.release()
	return r, true
}

// failNodeSoon gives every request forwarded to node until deadline, then
// fails it with reason. The grace lets answers already on their way over
// the node's own link (which may close a moment later) still arrive.
func (p *pendingTable) failNodeSoon(node string, deadline time.Time, reason string) {
	for i := range p.shards {
		s := &p.shards[i]
		s.mu.Lock()
		for seq, r := range s.m {
			if r.node == node && r.deadline.After(deadline) {
				r.deadline, r.reason = deadline, reason
				s.m[seq] = r
			}
		}
		s.mu.Unlock()
	}
}

// expire removes and returns every request whose deadline passed.
func (p *pendingTable) expire(now time.Time) []pendingRequest {
	var out []pendingRequest
	for i := range p.shards {
		s := &p.shards[i]
		s.mu.Lock()
		for seq, r := range s.m {
			if now.After(r.deadline) {
				out = append(out, r)
				delete(s.m, seq)
				r.release()
			}
		}
		s.mu.Unlock()
	}
	return out
}

func (p *pendingTable) len() int {
	n := 0
	for i := range p.shards {
		s := &p.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
