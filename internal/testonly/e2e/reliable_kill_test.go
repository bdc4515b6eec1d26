package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/inbox"
	"github.com/zcluster/zcluster/internal/testonly/testkit"
	"github.com/zcluster/zcluster/internal/testonly/testkit/chatkit"
	"github.com/zcluster/zcluster/internal/tools/zclient"
)

// killUser is one receiving user of TestFaultGateKilledReliable: a
// connection (replaced after a reconnect) whose frames are checked against
// an inbox cursor, per-sender sequence numbers for the reliable messages,
// and the plain ones counted beside them.
type killUser struct {
	name string

	mu      sync.Mutex
	cursor  inbox.Cursor
	next    map[string]int // sender -> next expected reliable sequence number
	got     int            // reliable messages received (new)
	dups    int
	plain   map[string]int // sender -> plain messages received
	errs    []string
	resumes int
}

// run resumes on conn (logged in) and reads every frame until the
// connection ends; the returned channel is closed once the last frame has
// been applied.
func (u *killUser) run(conn *zclient.Conn) <-chan struct{} {
	u.mu.Lock()
	req := u.cursor.Request()
	u.resumes++
	u.mu.Unlock()
	ended := make(chan struct{})
	_ = conn.Send(inbox.MsgResume, req.Append(nil))
	go func() {
		defer close(ended)
		for f := range conn.Frames() {
			u.frame(f)
		}
	}()
	return ended
}

func (u *killUser) fail(format string, args ...any) {
	if len(u.errs) < 5 {
		u.errs = append(u.errs, fmt.Sprintf(format, args...))
	}
}

func (u *killUser) frame(f zclient.Frame) {
	u.mu.Lock()
	defer u.mu.Unlock()
	switch f.MsgID {
	case inbox.MsgResume:
		a, err := inbox.ParseResumeAnswer(f.Payload)
		if err != nil {
			u.fail("%v", err)
			return
		}
		if a.Status != inbox.StatusOK {
			u.fail("resume answered %+v", a)
		}
		u.cursor.Answer(a)
	case inbox.MsgMessage:
		m, err := inbox.ParseMessage(f.Payload)
		if err != nil {
			u.fail("%v", err)
			return
		}
		isNew, err := u.cursor.Message(m)
		if err != nil {
			u.fail("%v", err)
			return
		}
		if !isNew {
			u.dups++
			return
		}
		var msg chat.Message
		_ = json.Unmarshal(m.Payload, &msg)
		n, _ := strconv.Atoi(msg.Text)
		if n != u.next[msg.From] {
			u.fail("from %s: got %d, want %d", msg.From, n, u.next[msg.From])
		}
		u.next[msg.From] = n + 1
		u.got++
	case chat.MsgDelivered:
		var msg chat.Message
		_ = json.Unmarshal(f.Payload, &msg)
		u.plain[msg.From]++
	case chat.MsgError:
		u.fail("error frame %s", f.Payload)
	}
}

// TestFaultGateKilledReliable: 100 users receive reliable messages from 10
// senders at a steady rate, half of them on a gate that is SIGKILLed
// mid-stream; they log in again on the other gate and resume. Every user
// ends with every reliable message exactly once, in order per sender. Each
// tick also sends a plain message (msgID 2) the same way, to count what
// at-most-once pushes lose in the same kill.
func TestFaultGateKilledReliable(t *testing.T) {
	skipShort(t)
	c := newCluster(t)
	g1 := c.startGate("gate-1")
	c.startBackend("im-1", chat.GroupIM)
	c.startBackend("im-2", chat.GroupIM)
	clientAddr := testkit.FreeAddr(t)
	p := startProc(t, c.nodeArgs("gate", "gate-2", "--listen", clientAddr, "--relay", testkit.FreeAddr(t))...)
	c.waitGroupSize("gate", 2, 20*time.Second)
	c.waitGroupSize(chat.GroupIM, 2, 5*time.Second)
	testkit.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, b := range c.backends {
			if len(b.Topology().Nodes("gate")) != 2 {
				return fmt.Errorf("backend does not see gate-2 yet")
			}
		}
		return nil
	})

	const users, senders = 100, 10
	const tick = 10 * time.Millisecond // per sender: one reliable + one plain message per tick
	us := make([]*killUser, users)
	var wg sync.WaitGroup
	for i := range us {
		u := &killUser{name: fmt.Sprintf("u%d", i), next: map[string]int{}, plain: map[string]int{}}
		us[i] = u
		addr := g1.ClientAddr()
		if i%2 == 1 {
			addr = clientAddr // gate-2, the one that dies
		}
		conn := chatkit.Dial(t, addr)
		chatkit.Login(t, conn, u.name)
		ended := u.run(conn)
		if i%2 == 1 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-conn.Done()
				<-ended
				// Log in again on the surviving gate and resume.
				conn := chatkit.Dial(t, g1.ClientAddr())
				chatkit.Login(t, conn, u.name)
				u.run(conn)
			}()
		}
	}
	testkit.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, u := range us {
			u.mu.Lock()
			ok := u.cursor.Epoch != 0 || u.resumes > 0 && len(u.errs) > 0
			u.mu.Unlock()
			if !ok {
				return fmt.Errorf("%s has no resume answer yet", u.name)
			}
		}
		return nil
	})

	// sent[s][u] counts reliable sends acknowledged ok; plainOK those of
	// plain sends acknowledged ok (the sender was told delivered).
	sent := make([][users]int, senders)
	plainOK := make([][users]int, senders)
	var failed atomic.Int64
	stop := make(chan struct{})
	var swg sync.WaitGroup
	for s := 0; s < senders; s++ {
		conn := dial(t, g1)
		name := fmt.Sprintf("s%d", s)
		chatkit.Login(t, conn, name)
		swg.Add(1)
		go func() {
			defer swg.Done()
			tk := time.NewTicker(tick)
			defer tk.Stop()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-tk.C:
				}
				u := (i + s*7) % users
				text := strconv.Itoa(sent[s][u])
				req, _ := json.Marshal(chat.SendRequest{To: us[u].name, Text: text})
				_ = conn.Send(chat.MsgReliable, req)
				_ = conn.Send(chat.MsgSend, req)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				for _, id := range []uint32{chat.MsgReliable, chat.MsgSend} {
					f, _, err := conn.Expect(ctx, id)
					if err != nil {
						failed.Add(1)
						continue
					}
					var r struct {
						OK bool `json:"ok"`
					}
					_ = json.Unmarshal(f.Payload, &r)
					switch {
					case id == chat.MsgReliable && r.OK:
						sent[s][u]++
					case id == chat.MsgReliable:
						failed.Add(1)
					case r.OK:
						plainOK[s][u]++
					}
				}
				cancel()
			}
		}()
	}

	time.Sleep(1500 * time.Millisecond)
	p.signal(syscall.SIGKILL)
	p.wait(5 * time.Second)
	killed := time.Now()
	wg.Wait() // every user of gate-2 logged in again and resumed
	reconnected := time.Since(killed)
	time.Sleep(2 * time.Second)
	close(stop)
	swg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d sends failed or went unanswered", n)
	}

	total := 0
	for s := range sent {
		for u := range sent[s] {
			total += sent[s][u]
		}
	}
	// Everything acknowledged arrives: live, replayed, or fetched by the
	// gate's sweep for pushes that went to the dead gate.
	var last error
	deadline := time.Now().Add(testSessionTTL + 10*time.Second)
	for time.Now().Before(deadline) {
		last = nil
		for i, u := range us {
			u.mu.Lock()
			for s := 0; s < senders; s++ {
				if got := u.next[fmt.Sprintf("s%d", s)]; got != sent[s][i] && last == nil {
					last = fmt.Errorf("%s has %d of %d from s%d", u.name, got, sent[s][i], s)
				}
			}
			u.mu.Unlock()
		}
		if last == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if last != nil {
		t.Fatal(last)
	}
	got, dups, plainLost := 0, 0, 0
	for i, u := range us {
		u.mu.Lock()
		if len(u.errs) > 0 {
			t.Errorf("%s: %v", u.name, u.errs)
		}
		got += u.got
		dups += u.dups
		for s := 0; s < senders; s++ {
			if miss := plainOK[s][i] - u.plain[fmt.Sprintf("s%d", s)]; miss > 0 {
				plainLost += miss
			}
		}
		u.mu.Unlock()
	}
	if got != total || dups != 0 {
		t.Fatalf("received %d reliable messages of %d, %d duplicates", got, total, dups)
	}
	t.Logf("gate SIGKILL mid-stream, %d users (%d on the killed gate) x %d senders: %d reliable messages sent, %d received exactly once in order, 0 lost, 0 duplicates; its users logged in again and resumed within %v; plain pushes (msgID 2) in the same run: %d acknowledged ok but never received",
		users, users/2, senders, total, got, reconnected.Round(time.Millisecond), plainLost)
}
