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
}

// pendingTable tracks forwarded requests by sequence number.
type pendingTable struct {
	mu sync.Mutex
	m  map[uint64]pendingRequest
}

func newPendingTable() *pendingTable {
	return &pendingTable{m: make(map[uint64]pendingRequest)}
}

func (p *pendingTable) add(seq uint64, r pendingRequest) {
	p.mu.Lock()
	p.m[seq] = r
	p.mu.Unlock()
}

// done removes seq if it was forwarded to node; a Done from another node is
// ignored (a peer cannot finish requests it was not given).
func (p *pendingTable) done(seq uint64, node string) (pendingRequest, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.m[seq]
	if !ok || r.node != node {
		return pendingRequest{}, false
	}
	delete(p.m, seq)
	return r, true
}

func (p *pendingTable) remove(seq uint64) {
	p.mu.Lock()
	delete(p.m, seq)
	p.mu.Unlock()
}

// failNodeSoon gives every request forwarded to node until deadline, then
// fails it with reason. The grace lets answers already on their way over
// the node's own link (which may close a moment later) still arrive.
func (p *pendingTable) failNodeSoon(node string, deadline time.Time, reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for seq, r := range p.m {
		if r.node == node && r.deadline.After(deadline) {
			r.deadline, r.reason = deadline, reason
			p.m[seq] = r
		}
	}
}

// expire removes and returns every request whose deadline passed.
func (p *pendingTable) expire(now time.Time) []pendingRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []pendingRequest
	for seq, r := range p.m {
		if now.After(r.deadline) {
			out = append(out, r)
			delete(p.m, seq)
		}
	}
	return out
}

func (p *pendingTable) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.m)
}
