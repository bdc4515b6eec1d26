package backend

import (
	"sync"
)

// The dispatcher runs client messages (KindForward) on the workers, like an
// actor scheduler:
//
//   - every session has its own FIFO queue, so its messages run in order
//     and never two at a time;
//   - a session with work waits in one ready queue; a worker takes the
//     session at its head, runs ONE message, and puts the session back at
//     the tail if it has more (round robin: a busy session cannot starve
//     the others);
//   - enqueue never blocks: a message that would overflow its session's
//     queue (QueueLen messages or SessionQueueBytes) or the node's total
//     (QueueBytes) is refused at once, and the caller answers it "busy".
//
// Queue nodes (items) and session queues are recycled through free lists,
// so queueing a message allocates nothing in the steady state; only the
// payload is copied into a buffer of its own, which the handler owns.

// itemOverhead is what one queued message is charged on top of its
// payload: the item and its share of the session queue. It keeps a flood of
// empty messages bounded by the byte limits too.
const itemOverhead = 128

// maxFreeItems and maxFreeQueues bound the free lists.
const (
	maxFreeItems  = 4096
	maxFreeQueues = 1024
)

// item is one message in a session queue. Items are recycled when the
// message is done: nothing may keep a pointer to one.
type item struct {
	next    *item
	source  string // interned gate id
	user    string // interned by its session queue
	seq     uint64
	msgID   uint32
	cost    int
	payload []byte // a buffer of its own (handed to the handler), nil if empty
}

// sessionQueue is the queue of one session. A queue stays in the map while
// idle, for reuse, until the sweeper finds it idle for a whole sweep
// period.
type sessionQueue struct {
	key        string
	user       string // the last user seen, so the same one is not copied again
	head, tail *item
	n, bytes   int
	state      queueState
	nextReady  *sessionQueue
	// idle list links, while state == queueIdle
	prevIdle, nextIdle *sessionQueue
	idleGen            uint64
}

type queueState uint8

const (
	queueIdle    queueState = iota // no message; on the idle list
	queueReady                     // has messages; on the ready list
	queueRunning                   // a worker runs its head message
)

// busyReason says why enqueue refused a message.
type busyReason uint8

const (
	accepted     busyReason = iota
	busySession             // the session's queue is full (count or bytes)
	busyNode                // the node's total queued bytes are at the limit
	busyStopping            // the dispatcher is closed
)

// dispatcher is the scheduler above; safe for concurrent use.
type dispatcher struct {
	maxCount     int // per session, messages queued or running
	maxBytes     int // per session
	maxNodeBytes int // all sessions

	mu         sync.Mutex
	cond       sync.Cond // workers wait on it for a ready session
	sessions   map[string]*sessionQueue
	readyHead  *sessionQueue
	readyTail  *sessionQueue
	idleHead   *sessionQueue // oldest idle first
	idleTail   *sessionQueue
	gen        uint64 // sweep generation
	freeItems  *item
	nFreeItems int
	freeQueues []*sessionQueue
	sources    map[string]string // interned gate ids
	bytes      int               // charged by every queued or running message
	waiting    int               // workers waiting on cond
	started    bool              // workers may take work
	closed     bool
}

func newDispatcher(maxCount, maxBytes, maxNodeBytes int) *dispatcher {
	d := &dispatcher{
		maxCount:     maxCount,
		maxBytes:     maxBytes,
		maxNodeBytes: maxNodeBytes,
		sessions:     make(map[string]*sessionQueue),
		sources:      make(map[string]string),
	}
	d.cond.L = &d.mu
	return d
}

// enqueue queues a copy of one message of session; it never blocks. The
// byte slices are only read during the call.
func (d *dispatcher) enqueue(source, session, user []byte, seq uint64, msgID uint32, payload []byte) busyReason {
	cost := len(payload) + itemOverhead
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return busyStopping
	}
	q := d.sessions[string(session)]
	if q != nil && q.n > 0 && (q.n >= d.maxCount || q.bytes+cost > d.maxBytes) {
		d.mu.Unlock()
		return busySession
	}
	if d.bytes > 0 && d.bytes+cost > d.maxNodeBytes {
		d.mu.Unlock()
		return busyNode
	}
	if q == nil {
		q = d.newQueue(string(session))
	}
	it := d.freeItems
	if it != nil {
		d.freeItems = it.next
		d.nFreeItems--
		it.next = nil
	} else {
		it = new(item)
	}
	it.source = d.intern(source)
	if string(user) != q.user {
		q.user = string(user)
	}
	it.user = q.user
	it.seq, it.msgID, it.cost = seq, msgID, cost
	if len(payload) > 0 {
		it.payload = append(make([]byte, 0, len(payload)), payload...)
	}
	if q.tail == nil {
		q.head = it
	} else {
		q.tail.next = it
	}
	q.tail = it
	q.n++
	q.bytes += cost
	d.bytes += cost
	wake := false
	if q.state == queueIdle {
		d.unlinkIdle(q)
		d.pushReady(q)
		wake = d.started && d.waiting > 0
	}
	d.mu.Unlock()
	if wake {
		d.cond.Signal()
	}
	return accepted
}

// intern returns the gate id as a string, copying it only the first time.
func (d *dispatcher) intern(b []byte) string {
	if s, ok := d.sources[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(d.sources) < 4096 { // gate ids; bounded in case of churn
		d.sources[s] = s
	}
	return s
}

// newQueue returns an empty, idle, mapped queue for key. Called with mu.
func (d *dispatcher) newQueue(key string) *sessionQueue {
	var q *sessionQueue
	if n := len(d.freeQueues); n > 0 {
		q = d.freeQueues[n-1]
		d.freeQueues = d.freeQueues[:n-1]
	} else {
		q = new(sessionQueue)
	}
	q.key = key
	q.state = queueIdle
	d.sessions[key] = q
	d.linkIdle(q)
	return q
}

func (d *dispatcher) pushReady(q *sessionQueue) {
	q.state = queueReady
	q.nextReady = nil
	if d.readyTail == nil {
		d.readyHead = q
	} else {
		d.readyTail.nextReady = q
	}
	d.readyTail = q
}

func (d *dispatcher) linkIdle(q *sessionQueue) {
	q.idleGen = d.gen
	q.prevIdle, q.nextIdle = d.idleTail, nil
	if d.idleTail == nil {
		d.idleHead = q
	} else {
		d.idleTail.nextIdle = q
	}
	d.idleTail = q
}

func (d *dispatcher) unlinkIdle(q *sessionQueue) {
	if q.prevIdle == nil {
		d.idleHead = q.nextIdle
	} else {
		q.prevIdle.nextIdle = q.nextIdle
	}
	if q.nextIdle == nil {
		d.idleTail = q.prevIdle
	} else {
		q.nextIdle.prevIdle = q.prevIdle
	}
	q.prevIdle, q.nextIdle = nil, nil
}

// start lets the workers take work (until then, messages only queue).
func (d *dispatcher) start() {
	d.mu.Lock()
	d.started = true
	d.mu.Unlock()
	d.cond.Broadcast()
}

// next blocks until a session has work and returns it with its head
// message; the session is now running (no other worker gets it) until
// done. ok is false once the dispatcher is closed.
func (d *dispatcher) next() (q *sessionQueue, it *item, ok bool) {
	d.mu.Lock()
	for !d.closed && (!d.started || d.readyHead == nil) {
		d.waiting++
		d.cond.Wait()
		d.waiting--
	}
	if d.closed {
		d.mu.Unlock()
		return nil, nil, false
	}
	q = d.readyHead
	d.readyHead = q.nextReady
	if d.readyHead == nil {
		d.readyTail = nil
	}
	q.nextReady = nil
	q.state = queueRunning
	it = q.head
	d.mu.Unlock()
	return q, it, true
}

// done ends the message it of q (taken by next): the item is recycled and
// the session goes back to the ready list if it has more.
func (d *dispatcher) done(q *sessionQueue, it *item) {
	d.mu.Lock()
	q.head = it.next
	if q.head == nil {
		q.tail = nil
	}
	q.n--
	q.bytes -= it.cost
	d.bytes -= it.cost
	d.recycle(it)
	if q.head != nil {
		d.pushReady(q)
	} else {
		q.state = queueIdle
		d.linkIdle(q)
	}
	d.mu.Unlock()
}

// recycle puts it on the free list. Called with mu.
func (d *dispatcher) recycle(it *item) {
	*it = item{}
	if d.nFreeItems >= maxFreeItems {
		return
	}
	it.next = d.freeItems
	d.freeItems = it
	d.nFreeItems++
}

// sweep forgets the session queues that stayed idle for a whole sweep
// period (since the sweep before this one).
func (d *dispatcher) sweep() (forgotten int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	for q := d.idleHead; q != nil && q.idleGen+2 <= d.gen; q = d.idleHead {
		d.unlinkIdle(q)
		delete(d.sessions, q.key)
		*q = sessionQueue{}
		if len(d.freeQueues) < maxFreeQueues {
			d.freeQueues = append(d.freeQueues, q)
		}
		forgotten++
	}
	return forgotten
}

// stats returns the number of session queues kept and the bytes charged.
func (d *dispatcher) stats() (sessions, bytes int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.sessions), d.bytes
}

// close stops the workers (each returns from next once its current
// handler is done) and returns the messages still waiting, which the
// caller must answer. Later enqueues are refused with busyStopping.
func (d *dispatcher) close() []unrun {
	d.mu.Lock()
	d.closed = true
	var left []unrun
	for _, q := range d.sessions {
		it := q.head
		if q.state == queueRunning && it != nil {
			it = it.next // its head is being handled
		}
		for ; it != nil; it = it.next {
			left = append(left, unrun{source: it.source, session: q.key, seq: it.seq, msgID: it.msgID})
		}
	}
	d.readyHead, d.readyTail = nil, nil
	d.mu.Unlock()
	d.cond.Broadcast()
	return left
}

// unrun is a message the dispatcher was closed on.
type unrun struct {
	source, session string
	seq             uint64
	msgID           uint32
}
