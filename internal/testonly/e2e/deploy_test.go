package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zcluster/zcluster/internal/testonly/testkit"
)

// readmeBlock is the code block of README.md's "A real deployment" section:
// its `./zcluster ...` command lines, comments cut, as argument lists, and
// the whole block for the checks that need it.
type readmeBlock struct {
	text  string
	lines [][]string // each line's arguments after ./zcluster
	notes []string   // each line's trailing "# ..." comment, or ""
}

// readReadmeDeployment parses README.md's deployment block.
func readReadmeDeployment(t *testing.T) readmeBlock {
	t.Helper()
	b, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	_, section, ok := strings.Cut(readme, "\n## A real deployment\n")
	if !ok {
		t.Fatal(`README.md has no "## A real deployment" section`)
	}
	_, rest, ok := strings.Cut(section, "\n```\n")
	block, _, ok2 := strings.Cut(rest, "\n```\n")
	if !ok || !ok2 {
		t.Fatal(`README.md's "A real deployment" section has no code block`)
	}
	rb := readmeBlock{text: block}
	for _, line := range strings.Split(block, "\n") {
		cmd, note, _ := strings.Cut(line, " #")
		f := strings.Fields(cmd)
		if len(f) == 0 || f[0] != "./zcluster" {
			continue
		}
		rb.lines = append(rb.lines, f[1:])
		rb.notes = append(rb.notes, strings.TrimSpace(note))
	}
	return rb
}

// flagValue returns the value of --name in args.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if a == "--"+name && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// addrRE finds the host:port addresses in an argument (also inside a URL).
var addrRE = regexp.MustCompile(`(127\.0\.0\.1|localhost|0\.0\.0\.0)?:\d{2,5}\b`)

// addrMap rewrites the README's addresses to free loopback ones, the same
// README address always to the same free one, so the commands still find
// each other.
type addrMap map[string]string

func (m addrMap) rewrite(t *testing.T, args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = addrRE.ReplaceAllStringFunc(a, func(addr string) string {
			if _, ok := m[addr]; !ok {
				m[addr] = testkit.FreeAddr(t)
			}
			return m[addr]
		})
	}
	return out
}

// readmeProc is a README command running as a process of the built binary.
type readmeProc struct {
	args  []string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	out   strings.Builder
	done  chan struct{}
	err   error
}

func (p *readmeProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// startReadmeProc starts the binary with args (exactly as the README has
// them, addresses rewritten). Nodes log at warn through ZC_LOG_LEVEL (an
// environment variable: the command line stays as written). It is killed
// at cleanup.
func startReadmeProc(t *testing.T, args []string) *readmeProc {
	t.Helper()
	p := &readmeProc{args: args, done: make(chan struct{})}
	p.cmd = exec.Command(zclusterBinary(t), args...)
	p.cmd.Env = append(os.Environ(), "ZC_LOG_LEVEL=warn")
	stdin, err := p.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdin = stdin
	r, w := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = w, w
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
	}()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start zcluster %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		p.err = p.cmd.Wait()
		_ = w.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("zcluster %s:\n%s", strings.Join(args, " "), p.output())
		}
	})
	return p
}

// waitOutput waits for want in p's output.
func (p *readmeProc) waitOutput(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	testkit.CheckFor(t, timeout, 20*time.Millisecond, func() error {
		if strings.Contains(p.output(), want) {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("zcluster %s exited (%v) without printing %q:\n%s", strings.Join(p.args, " "), p.err, want, p.output())
		default:
		}
		return fmt.Errorf("zcluster %s has not printed %q:\n%s", strings.Join(p.args, " "), want, p.output())
	})
}

// runReadme runs a short-lived README command and returns its exit error
// and output.
func runReadme(t *testing.T, args []string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, zclusterBinary(t), args...).CombinedOutput()
	return string(out), err
}

// TestReadmeDeployment runs the command lines of README.md's "A real
// deployment" block, parsed from README.md itself, as processes of the built
// binary against an embedded etcd and a redis-server: every gate and backend
// line with its flags as written (only the addresses moved to free ports),
// the health and routes lines, then two chat clients (the chat line and the
// one its comment describes) that send to each other across the two gates
// and run the chain-echo, as the README's "In chat" paragraph says. So the
// README cannot drift from what works: drop --http from a line and health
// fails, rename a flag and the node exits.
func TestReadmeDeployment(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the zcluster binary")
	}
	rb := readReadmeDeployment(t)
	if !strings.Contains(rb.text, "go build -o zcluster ./cmd/zcluster") {
		t.Fatal("the README's deployment block does not build ./zcluster with `go build -o zcluster ./cmd/zcluster`")
	}
	c := newCluster(t)
	var nodes, health, routes, chats [][]string
	var chatNotes []string
	etcdSeen, redisSeen := "", ""
	for i, args := range rb.lines {
		switch args[0] {
		case "gate", "backend":
			nodes = append(nodes, args)
			e, _ := flagValue(args, "etcd")
			r, _ := flagValue(args, "redis")
			if (etcdSeen != "" && e != etcdSeen) || (redisSeen != "" && r != redisSeen) || e == "" || r == "" {
				t.Fatalf("README node line with other or no --etcd/--redis: %v", args)
			}
			etcdSeen, redisSeen = e, r
		case "health":
			health = append(health, args)
		case "routes":
			routes = append(routes, args)
		case "chat":
			chats = append(chats, args)
			chatNotes = append(chatNotes, rb.notes[i])
		default:
			t.Fatalf("README deployment line of an unexpected command: ./zcluster %s", strings.Join(args, " "))
		}
	}
	if len(nodes) < 3 || len(health) == 0 || len(chats) != 1 {
		t.Fatalf("README deployment block: %d node lines, %d health lines, %d chat lines; want gates and backends, a health line and one chat line", len(nodes), len(health), len(chats))
	}
	var gates, backends int
	for _, n := range nodes {
		if n[0] == "gate" {
			gates++
		} else {
			backends++
		}
		if _, ok := flagValue(n, "http"); !ok {
			t.Errorf("README node line without --http (its health cannot be checked): %v", n)
		}
	}
	if gates < 2 {
		t.Fatalf("README deployment has %d gates; the chat across gates needs 2", gates)
	}

	addrs := addrMap{}
	addrs[etcdSeen] = strings.TrimPrefix(c.etcd.Endpoints()[0], "http://")
	addrs[redisSeen] = c.redisAddr
	var procs []*readmeProc
	for _, n := range nodes {
		procs = append(procs, startReadmeProc(t, addrs.rewrite(t, n)))
	}
	// A node line that does not run (a renamed flag, a wrong value) ends
	// the test at once, with the node's own one-line reason.
	nodesAlive := func() {
		for _, p := range procs {
			select {
			case <-p.done:
				t.Fatalf("README line `zcluster %s` exited (%v):\n%s", strings.Join(p.args, " "), p.err, p.output())
			default:
			}
		}
	}

	// Every health line exits 0 once its node is up.
	for _, h := range health {
		args := addrs.rewrite(t, h)
		testkit.CheckFor(t, 30*time.Second, 200*time.Millisecond, func() error {
			nodesAlive()
			if out, err := runReadme(t, args); err != nil {
				return fmt.Errorf("zcluster %s: %v: %s", strings.Join(args, " "), err, out)
			}
			return nil
		})
	}
	// `zcluster routes` lists every node of the README.
	for _, r := range routes {
		args := addrs.rewrite(t, r)
		testkit.CheckFor(t, 30*time.Second, 200*time.Millisecond, func() error {
			nodesAlive()
			out, err := runReadme(t, args)
			if err != nil {
				return fmt.Errorf("zcluster %s: %v: %s", strings.Join(args, " "), err, out)
			}
			for _, n := range nodes {
				id, _ := flagValue(n, "id")
				group, _ := flagValue(n, "group")
				if n[0] == "backend" && group == "echo" {
					continue // echo serves no client msgID
				}
				if !strings.Contains(out, id) {
					return fmt.Errorf("routes does not list %s yet:\n%s", id, out)
				}
			}
			return nil
		})
	}

	// The README's "What etcd and Redis show" has the values etcd holds.
	cli, _ := c.clients()
	for _, key := range []string{"/zcluster/routes/2/im-1", "/zcluster/routes/1/gate-1", "/zcluster/known/2/im-1"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := cli.Get(ctx, key)
		cancel()
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("etcd %s: %v (%d keys)", key, err, len(resp.Kvs))
		}
		// The README's listing: the key on a line, its value on the next
		// (either may be followed by a "# comment").
		want := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + `(\s+#.*)?\n` + regexp.QuoteMeta(string(resp.Kvs[0].Value)) + `(\s+#.*)?$`)
		if !want.MatchString(readmeText(t)) {
			t.Errorf("README's etcd listing does not show what etcd holds:\n%s\n%s", key, resp.Kvs[0].Value)
		}
	}

	// The chat line, and the one of its comment ("in another terminal:
	// --gate ... --user bob"), flags of the comment replacing the line's.
	alice := chats[0]
	note := chatNotes[0]
	_, other, ok := strings.Cut(note, ":")
	if !ok {
		t.Fatalf("the chat line's comment %q does not give the second client's flags", note)
	}
	bob := append([]string(nil), alice...)
	of := strings.Fields(other)
	for i := 0; i+1 < len(of); i += 2 {
		for j := range bob {
			if bob[j] == of[i] && j+1 < len(bob) {
				bob[j+1] = of[i+1]
			}
		}
	}
	aliceName, _ := flagValue(alice, "user")
	bobName, _ := flagValue(bob, "user")
	aliceGate, _ := flagValue(alice, "gate")
	bobGate, _ := flagValue(bob, "gate")
	if aliceName == bobName || aliceGate == bobGate {
		t.Fatalf("the two chat clients of the README are not two users on two gates: %v / %v", alice, bob)
	}
	pa := startReadmeProc(t, addrs.rewrite(t, alice))
	pb := startReadmeProc(t, addrs.rewrite(t, bob))
	pa.waitOutput(t, "logged in as "+aliceName, 20*time.Second)
	pb.waitOutput(t, "logged in as "+bobName, 20*time.Second)

	// "In chat: `@bob hi` sends to bob, ... `/echo text` runs the
	// chain-echo (im -> echo), `/quit` leaves."
	if !strings.Contains(readmeText(t), "`@"+bobName+" hi` sends to "+bobName) {
		t.Fatalf("README's chat paragraph no longer says `@%s hi` sends to %s", bobName, bobName)
	}
	fmt.Fprintf(pa.stdin, "@%s hi\n", bobName)
	pb.waitOutput(t, "["+aliceName+"] hi", 10*time.Second)
	// The echo node may reach the im nodes' view a moment after the
	// routes showed them: a first chain-echo may get an error line.
	testkit.CheckFor(t, 20*time.Second, time.Second, func() error {
		fmt.Fprintf(pb.stdin, "/echo around\n")
		if strings.Contains(pb.output(), "echo: around") {
			return nil
		}
		return fmt.Errorf("no chain-echo answer:\n%s", pb.output())
	})
	for _, p := range []*readmeProc{pa, pb} {
		fmt.Fprintf(p.stdin, "/quit\n")
		select {
		case <-p.done:
			if p.err != nil {
				t.Errorf("chat %v: %v", p.args, p.err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("chat %v did not leave on /quit", p.args)
		}
	}
}

// readmeText is README.md.
func readmeText(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
