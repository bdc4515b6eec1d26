package inbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/zcluster/zcluster/internal/devstack/redisrun"
	"github.com/zcluster/zcluster/internal/testonly/testkit"
)

func newStore(t *testing.T, mutate func(*Config)) (*Store, *redis.Client) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: testkit.RedisServer(t).Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	cfg := Config{Client: rdb}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, rdb
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestAppendReadDenseOffsets(t *testing.T) {
	s, rdb := newStore(t, nil)
	ctx := ctxT(t)
	var epoch uint64
	for i := 1; i <= 5; i++ {
		p, err := s.Append(ctx, "alice", 100, []byte(fmt.Sprintf("m%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if p.Offset != uint64(i) {
			t.Fatalf("append %d got offset %d", i, p.Offset)
		}
		if epoch == 0 {
			epoch = p.Epoch
		}
		if p.Epoch != epoch || !EpochOf("alice", epoch) || EpochOf("bob", epoch) {
			t.Fatalf("epoch %x (first %x)", p.Epoch, epoch)
		}
	}
	pg, err := s.Read(ctx, "alice", 2, 100)
	if err != nil {
		t.Fatal(err)
	}
	if pg.Epoch != epoch || pg.Last != 5 || pg.First != 1 || len(pg.Entries) != 3 {
		t.Fatalf("page %+v", pg)
	}
	for i, e := range pg.Entries {
		if e.Offset != uint64(3+i) || e.MsgID != 100 || string(e.Payload) != fmt.Sprintf("m%d", 3+i) {
			t.Fatalf("entry %d: %+v", i, e)
		}
	}
	// The keys share a slot and are where the doc says.
	if n, _ := rdb.Exists(ctx, "zc:ib:{alice}", "zc:im:{alice}").Result(); n != 2 {
		t.Fatalf("keys missing: %d", n)
	}
	if ttl := rdb.PTTL(ctx, "zc:ib:{alice}").Val(); ttl <= 0 || ttl > DefaultTTL {
		t.Fatalf("stream ttl %v", ttl)
	}
	// An unknown user reads an empty inbox with a fresh epoch that the next
	// append keeps.
	pg, err = s.Read(ctx, "nobody", 0, 10)
	if err != nil || pg.Last != 0 || pg.First != 1 || len(pg.Entries) != 0 || !EpochOf("nobody", pg.Epoch) {
		t.Fatalf("empty read: %+v %v", pg, err)
	}
	p, err := s.Append(ctx, "nobody", 1, nil)
	if err != nil || p.Epoch != pg.Epoch || p.Offset != 1 {
		t.Fatalf("append after read: %+v %v (read epoch %x)", p, err, pg.Epoch)
	}
}

func TestBraceUsersShareOneSlot(t *testing.T) {
	s, _ := newStore(t, nil)
	for _, u := range []string{"a{b}", "}x", "{}", "plain"} {
		a, b := s.StreamKey(u), s.MetaKey(u)
		if slotTag(a) != slotTag(b) || slotTag(a) == "" {
			t.Fatalf("%q: keys %q %q have tags %q %q", u, a, b, slotTag(a), slotTag(b))
		}
	}
	if s.StreamKey("a{b}") == s.StreamKey("612762") {
		t.Fatal("escaped and plain names collide")
	}
}

// slotTag is Redis Cluster's hash tag rule.
func slotTag(key string) string {
	for i := 0; i < len(key); i++ {
		if key[i] == '{' {
			for j := i + 1; j < len(key); j++ {
				if key[j] == '}' {
					return key[i+1 : j]
				}
			}
			return ""
		}
	}
	return ""
}

func TestTrimByCountAndAge(t *testing.T) {
	s, _ := newStore(t, func(c *Config) { c.MaxLen = 5; c.TTL = time.Second })
	ctx := ctxT(t)
	for i := 0; i < 8; i++ {
		if _, err := s.Append(ctx, "bob", 1, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	pg, err := s.Read(ctx, "bob", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if pg.First != 4 || pg.Last != 8 || len(pg.Entries) != 5 || pg.Entries[0].Offset != 4 {
		t.Fatalf("after 8 appends with MaxLen 5: %+v", pg)
	}
	time.Sleep(1100 * time.Millisecond)
	if _, err := s.Append(ctx, "bob", 1, []byte("new")); err != nil {
		t.Fatal(err)
	}
	pg, err = s.Read(ctx, "bob", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if pg.First != 9 || pg.Last != 9 || len(pg.Entries) != 1 {
		t.Fatalf("after the age limit: %+v", pg)
	}
}

func TestFlushStartsNewEpoch(t *testing.T) {
	s, rdb := newStore(t, nil)
	ctx := ctxT(t)
	p1, err := s.Append(ctx, "carol", 1, []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	rdb.FlushAll(ctx)
	pg, err := s.Read(ctx, "carol", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if pg.Epoch == p1.Epoch || pg.Last != 0 {
		t.Fatalf("after FLUSHALL: %+v (old epoch %x)", pg, p1.Epoch)
	}
	p2, err := s.Append(ctx, "carol", 1, []byte("b"))
	if err != nil || p2.Epoch != pg.Epoch || p2.Offset != 1 {
		t.Fatalf("append after flush: %+v %v", p2, err)
	}
	// Meta lost but the stream left behind: the stream is dropped, offsets
	// restart in a new epoch.
	rdb.Del(ctx, s.MetaKey("carol"))
	p3, err := s.Append(ctx, "carol", 1, []byte("c"))
	if err != nil || p3.Epoch == p2.Epoch || p3.Offset != 1 {
		t.Fatalf("append after meta loss: %+v %v", p3, err)
	}
	if pg, _ := s.Read(ctx, "carol", 0, 10); len(pg.Entries) != 1 || string(pg.Entries[0].Payload) != "c" {
		t.Fatalf("old epoch's entries kept: %+v", pg)
	}
}

// TestConcurrentAppendsBatched: many goroutines appending to a few users
// get dense, unique offsets per user, in fewer round trips than messages.
func TestConcurrentAppendsBatched(t *testing.T) {
	s, _ := newStore(t, nil)
	ctx := ctxT(t)
	const writers, each = 64, 40
	var mu sync.Mutex
	got := map[string][]uint64{}
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprintf("u%d", w%4)
			for i := 0; i < each; i++ {
				p, err := s.Append(ctx, user, 7, []byte("x"))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				got[user] = append(got[user], p.Offset)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for u, offs := range got {
		sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
		for i, o := range offs {
			if o != uint64(i+1) {
				t.Fatalf("%s: offsets not dense: %v", u, offs[:min(len(offs), i+2)])
			}
		}
	}
	st := s.Stats()
	t.Logf("%d appends in %d round trips", st.Appends, st.RedisCalls)
	if st.Appends != writers*each || st.RedisCalls >= st.Appends {
		t.Fatalf("stats %+v: want %d appends in fewer round trips", st, writers*each)
	}
}

func TestAppendCancelledWhileQueued(t *testing.T) {
	s, _ := newStore(t, nil)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, cancel := context.WithTimeout(ctx, time.Duration(i%5)*100*time.Microsecond)
			defer cancel()
			_, _ = s.Append(c, "dave", 1, nil)
		}()
	}
	wg.Wait()
	// The lead was never lost: a later append completes.
	if _, err := s.Append(ctx, "dave", 1, nil); err != nil {
		t.Fatal(err)
	}
}

func TestWireRoundTrip(t *testing.T) {
	b := AppendMessage(nil, 7, 0xabcdef0012345678, 100, []byte("hi"))
	m, err := ParseMessage(b)
	if err != nil || m.Offset != 7 || m.Epoch != 0xabcdef0012345678 || m.MsgID != 100 || string(m.Payload) != "hi" {
		t.Fatalf("%+v %v", m, err)
	}
	if _, err := ParseMessage(b[:19]); err == nil {
		t.Fatal("short message accepted")
	}
	r, err := ParseResumeRequest(ResumeRequest{Epoch: 1, Offset: 2}.Append(nil))
	if err != nil || r.Epoch != 1 || r.Offset != 2 {
		t.Fatalf("%+v %v", r, err)
	}
	for _, bad := range [][]byte{nil, make([]byte, 15), make([]byte, 17)} {
		if _, err := ParseResumeRequest(bad); err == nil {
			t.Fatalf("request of %d bytes accepted", len(bad))
		}
	}
	a, err := ParseResumeAnswer(ResumeAnswer{Status: StatusGap, Epoch: 3, Next: 4, Last: 5}.Append(nil))
	if err != nil || a != (ResumeAnswer{Status: StatusGap, Epoch: 3, Next: 4, Last: 5}) {
		t.Fatalf("%+v %v", a, err)
	}
}

func TestCursor(t *testing.T) {
	var c Cursor
	if r := c.Request(); r != (ResumeRequest{}) {
		t.Fatalf("fresh request %+v", r)
	}
	c.Answer(ResumeAnswer{Epoch: 9, Next: 3, Last: 4})
	for _, off := range []uint64{3, 4} {
		if ok, err := c.Message(Message{Offset: off, Epoch: 9}); !ok || err != nil {
			t.Fatalf("offset %d: %v %v", off, ok, err)
		}
	}
	if ok, err := c.Message(Message{Offset: 4, Epoch: 9}); ok || err != nil {
		t.Fatalf("duplicate: %v %v", ok, err)
	}
	if _, err := c.Message(Message{Offset: 6, Epoch: 9}); err == nil {
		t.Fatal("skipped offset accepted")
	}
	c.Answer(ResumeAnswer{Status: StatusGap, Epoch: 10, Next: 1, Last: 1})
	if ok, err := c.Message(Message{Offset: 1, Epoch: 10}); !ok || err != nil || c.Gaps != 1 {
		t.Fatalf("after gap: %v %v %+v", ok, err, c)
	}
}

// TestRedisCluster: the scripts touch two keys of one slot, so appends,
// reads and heads work on Redis Cluster, for users spread over every node
// and for names holding braces.
func TestRedisCluster(t *testing.T) {
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("ZC_TEST_REDIS") == "require" {
				t.Fatalf("%s not on PATH", bin)
			}
			t.Skipf("%s not on PATH", bin)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := redisrun.StartCluster(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	defer cc.Close()
	s, err := New(Config{Client: cc})
	if err != nil {
		t.Fatal(err)
	}
	users := []string{"a{b}", "}x", "{}"}
	for i := range 30 {
		users = append(users, fmt.Sprintf("user-%d", i))
	}
	var wg sync.WaitGroup
	for _, u := range users {
		for i := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := s.Append(ctx, u, 1, []byte{byte(i)}); err != nil {
					t.Error(err)
				}
			}()
		}
	}
	wg.Wait()
	heads, err := s.Heads(ctx, users)
	if err != nil {
		t.Fatal(err)
	}
	for i, u := range users {
		pg, err := s.Read(ctx, u, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		if pg.Last != 3 || len(pg.Entries) != 3 || heads[i] != (Head{Epoch: pg.Epoch, Last: 3}) {
			t.Fatalf("%s: %+v, head %+v", u, pg, heads[i])
		}
	}
}

// TestAppendAsyncKeepsOrderPerUser: appends made one after another for a
// user, without waiting, are stored in that order with dense offsets, and
// their dones run in that order; a user's appends queued together share
// one script.
func TestAppendAsyncKeepsOrderPerUser(t *testing.T) {
	s, _ := newStore(t, nil)
	ctx := ctxT(t)
	const users, each = 20, 300
	var mu sync.Mutex
	got := map[string][]uint64{}
	var wg sync.WaitGroup
	for u := 0; u < users; u++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprintf("o%d", u)
			for i := 0; i < each; i++ {
				err := s.AppendAsync(user, uint32(i), []byte(strconv.Itoa(i)), func(p Position, err error) {
					if err != nil {
						t.Error(err)
					}
					mu.Lock()
					got[user] = append(got[user], p.Offset)
					mu.Unlock()
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	t.Logf("%d appends, %d scripts, %d round trips", st.Appends, st.Scripts, st.RedisCalls)
	if st.Appends != users*each || st.Scripts >= st.Appends || st.RedisCalls > st.Scripts {
		t.Fatalf("stats %+v: want %d appends in fewer scripts, in fewer round trips", st, users*each)
	}
	for u := 0; u < users; u++ {
		user := fmt.Sprintf("o%d", u)
		offs := got[user]
		if len(offs) != each {
			t.Fatalf("%s: %d dones, want %d", user, len(offs), each)
		}
		for i, o := range offs {
			if o != uint64(i+1) {
				t.Fatalf("%s: done %d has offset %d (dones out of order or offsets not dense)", user, i, o)
			}
		}
		pg, err := s.Read(ctx, user, 0, each)
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range pg.Entries {
			if e.Offset != uint64(i+1) || e.MsgID != uint32(i) || string(e.Payload) != strconv.Itoa(i) {
				t.Fatalf("%s: entry %d is %+v: stored out of order", user, i, e)
			}
		}
	}
}

// TestAppendAsyncBusyAndClosed: past MaxPendingBytes an append is refused
// with ErrBusy at once; after Close with ErrClosed; Close waits for the
// dones of accepted appends.
func TestAppendAsyncBusyAndClosed(t *testing.T) {
	s, _ := newStore(t, func(c *Config) { c.MaxPendingBytes = 1000 })
	release := make(chan struct{})
	stored := make(chan Position, 1)
	if err := s.AppendAsync("erin", 1, make([]byte, 900), func(p Position, err error) {
		<-release // the append stays pending until released
		stored <- p
	}); err != nil {
		t.Fatal(err)
	}
	err := s.AppendAsync("erin", 2, make([]byte, 100), func(Position, error) { t.Error("done called for a refused append") })
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("second append: %v, want ErrBusy", err)
	}
	if st := s.Stats(); st.Busy != 1 || st.PendingBytes != 900+reqOverhead {
		t.Fatalf("stats %+v: want 1 busy, the first append pending", st)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close(ctxT(t)) }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) before the pending append's done ran", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if p := <-stored; p.Offset != 1 {
		t.Fatalf("pending append stored at %+v", p)
	}
	if err := s.AppendAsync("erin", 3, nil, func(Position, error) {}); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after Close: %v, want ErrClosed", err)
	}
}
