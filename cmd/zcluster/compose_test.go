package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/internal/devstack/embedetcd"
	"github.com/zcluster/zcluster/internal/testonly/testkit"
	"github.com/zcluster/zcluster/internal/tools/topview"
	"github.com/zcluster/zcluster/internal/tools/zclient"
)

// composePath is the compose file under test, from this package's directory.
var composePath = filepath.Join("..", "..", "deploy", "docker-compose.yml")

// composeFile is the part of a compose file the test reads.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	EnvFile     yaml.Node         `yaml:"env_file"` // a string or a list
	Ports       []string          `yaml:"ports"`
	Container   string            `yaml:"container_name"`
	Hostname    string            `yaml:"hostname"`
	Restart     string            `yaml:"restart"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

// zcluster reports whether the service runs the zcluster image.
func (s composeService) zcluster() bool { return s.Build.Dockerfile == "deploy/Dockerfile" }

// envFiles lists the service's env_file entries.
func (s composeService) envFiles(t *testing.T) []string {
	t.Helper()
	switch s.EnvFile.Kind {
	case 0:
		return nil
	case yaml.ScalarNode:
		return []string{s.EnvFile.Value}
	}
	var l []string
	if err := s.EnvFile.Decode(&l); err != nil {
		t.Fatalf("env_file: %v", err)
	}
	return l
}

// readEnvFile parses a compose env file: KEY=VALUE lines, # comments.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: bad line %q", path, line)
		}
		env[k] = v
	}
	return env
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	data, err := os.ReadFile(composePath)
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	if err := yaml.Unmarshal(data, &cf); err != nil {
		t.Fatalf("%s: %v", composePath, err)
	}
	return cf
}

var (
	testBinOnce sync.Once
	testBinPath string
	testBinErr  error
)

// testBinary builds this command once per test run.
func testBinary(t *testing.T) string {
	t.Helper()
	testBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "zcluster-cmd-bin")
		if err != nil {
			testBinErr = err
			return
		}
		testBinPath = filepath.Join(dir, "zcluster")
		out, err := exec.Command("go", "build", "-o", testBinPath, ".").CombinedOutput()
		if err != nil {
			testBinErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if testBinErr != nil {
		t.Fatal(testBinErr)
	}
	return testBinPath
}

// syncBuffer is a bytes.Buffer safe for a child's output and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// composeNode is one service started as a process.
type composeNode struct {
	name     string
	env      map[string]string
	cmd      *exec.Cmd
	stdout   *syncBuffer
	stderr   *syncBuffer
	health   []string // the healthcheck command, ports substituted
	exited   chan struct{}
	exitErr  error
	httpAddr string
}

// loopbackFor returns addr in place of a ":PORT" or "host:PORT" value.
func loopbackFor(value, addr string) string {
	if _, _, err := net.SplitHostPort(value); err != nil {
		return value
	}
	return addr
}

// TestComposeEnvironment starts every zcluster service of
// deploy/docker-compose.yml as a process of the real binary, with exactly
// the command and environment (environment: plus env_file) the compose file
// gives it. Only etcd's and Redis's addresses (an embedded etcd and a test
// Redis) and the listen ports (free loopback ones) are substituted. It then
// checks what a user of `docker compose up` sees: every node passes the
// compose healthcheck, a client logs in on each gate and they chat across
// them, `zcluster top` lists the cluster, /metrics counts the messages, and
// logs are JSON lines with nothing on stdout (no zinx banner).
func TestComposeEnvironment(t *testing.T) {
	cf := loadCompose(t)
	for _, need := range []string{"etcd", "redis"} {
		if _, ok := cf.Services[need]; !ok {
			t.Fatalf("compose file has no %s service", need)
		}
	}
	var names []string
	for name, s := range cf.Services {
		if s.zcluster() {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	if len(names) < 4 {
		t.Fatalf("zcluster services %v: want 2 gates and the im and echo backends", names)
	}
	// What compose promises: nothing starts before etcd and Redis are
	// healthy, nodes restart, and each has a healthcheck the image can run.
	for _, name := range names {
		s := cf.Services[name]
		for _, dep := range []string{"etcd", "redis"} {
			if s.DependsOn[dep].Condition != "service_healthy" {
				t.Errorf("%s: depends_on %s: condition %q, want service_healthy", name, dep, s.DependsOn[dep].Condition)
			}
		}
		if s.Restart == "" {
			t.Errorf("%s: no restart policy", name)
		}
		if len(s.Healthcheck.Test) < 3 || s.Healthcheck.Test[1] != "zcluster" || s.Healthcheck.Test[2] != "health" {
			t.Errorf("%s: healthcheck %v, want [CMD zcluster health ...]", name, s.Healthcheck.Test)
		}
		// Scalable with no per-container edits: no fixed id, name or
		// advertise address, and a wildcard relay address (the node then
		// advertises its container's own address).
		if s.Container != "" || s.Hostname != "" {
			t.Errorf("%s: container_name/hostname set: replicas would clash", name)
		}
		for _, k := range []string{"ZC_ID", "ZC_ADVERTISE"} {
			if _, ok := s.Environment[k]; ok {
				t.Errorf("%s: %s set: replicas would clash", name, k)
			}
		}
		if host, _, err := net.SplitHostPort(s.Environment["ZC_RELAY"]); err != nil || host != "" {
			t.Errorf("%s: ZC_RELAY %q, want a wildcard \":PORT\"", name, s.Environment["ZC_RELAY"])
		}
	}
	dockerfile, err := os.ReadFile(filepath.Join(filepath.Dir(composePath), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(dockerfile), "ZINX_CONFIG_FILE_PATH") {
		t.Errorf("deploy/Dockerfile sets ZINX_CONFIG_FILE_PATH: zcluster keeps zinx quiet itself (internal/runtime/zinxquiet)")
	}
	if t.Failed() {
		t.FailNow()
	}

	bin := testBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	etcd, err := embedetcd.Start(ctx, t.TempDir())
	if err != nil {
		t.Fatalf("embedded etcd: %v", err)
	}
	t.Cleanup(etcd.Close)
	redisAddr := testkit.Redis(t)

	var nodes []*composeNode
	gates := map[string]string{} // service -> client address
	// Each FreeAddr is free when picked but not held: two picks can name
	// the same port, so re-pick until every listen address is distinct.
	used := map[string]bool{}
	freeAddr := func() string {
		for {
			if a := testkit.FreeAddr(t); !used[a] {
				used[a] = true
				return a
			}
		}
	}
	for _, name := range names {
		s := cf.Services[name]
		env := map[string]string{}
		for _, f := range s.envFiles(t) {
			for k, v := range readEnvFile(t, filepath.Join(filepath.Dir(composePath), f)) {
				env[k] = v
			}
		}
		for k, v := range s.Environment {
			env[k] = v
		}
		n := &composeNode{name: name, env: env, stdout: &syncBuffer{}, stderr: &syncBuffer{}, exited: make(chan struct{})}
		// Substitutions: the stores' addresses and the listen ports.
		if _, ok := env["ZC_ETCD"]; !ok {
			t.Fatalf("%s: no ZC_ETCD in its environment", name)
		}
		env["ZC_ETCD"] = strings.Join(etcd.Endpoints(), ",")
		if _, ok := env["ZC_REDIS"]; !ok {
			t.Fatalf("%s: no ZC_REDIS in its environment", name)
		}
		env["ZC_REDIS"] = redisAddr
		for _, k := range []string{"ZC_LISTEN", "ZC_RELAY", "ZC_HTTP"} {
			if v, ok := env[k]; ok {
				env[k] = loopbackFor(v, freeAddr())
			}
		}
		n.httpAddr = env["ZC_HTTP"]
		if n.httpAddr == "" {
			t.Fatalf("%s: no ZC_HTTP: its healthcheck cannot work", name)
		}
		for _, a := range s.Healthcheck.Test[2:] {
			if u, err := url.Parse(a); err == nil && u.Scheme == "http" {
				u.Host = n.httpAddr // the node's port, on loopback
				a = u.String()
			}
			n.health = append(n.health, a)
		}
		if len(s.Command) > 0 && s.Command[0] == "gate" {
			gates[name] = env["ZC_LISTEN"]
			if len(s.Ports) == 0 {
				t.Errorf("%s: a gate with no published client port", name)
			}
		}
		var envList []string
		for k, v := range env {
			envList = append(envList, k+"="+v)
		}
		n.cmd = exec.Command(bin, s.Command...)
		n.cmd.Env = envList
		n.cmd.Stdout, n.cmd.Stderr = n.stdout, n.stderr
		if err := n.cmd.Start(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		go func() { n.exitErr = n.cmd.Wait(); close(n.exited) }()
		t.Cleanup(func() {
			_ = n.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-n.exited:
			case <-time.After(20 * time.Second):
				_ = n.cmd.Process.Kill()
				<-n.exited
			}
			if t.Failed() {
				t.Logf("%s stderr:\n%s", n.name, n.stderr.String())
			}
		})
		nodes = append(nodes, n)
	}
	if len(gates) < 2 {
		t.Fatalf("compose gates %v: want 2", gates)
	}

	// Every node passes its compose healthcheck (GET /readyz).
	for _, n := range nodes {
		testkit.CheckFor(t, 30*time.Second, 200*time.Millisecond, func() error {
			select {
			case <-n.exited:
				t.Fatalf("%s exited: %v\nstderr:\n%s\nstdout:\n%s", n.name, n.exitErr, n.stderr.String(), n.stdout.String())
			default:
			}
			out, err := exec.Command(bin, n.health...).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%s: %v: %s", n.name, err, out)
			}
			return nil
		})
	}

	// A client logs in on each gate, and they chat across the gates.
	gateNames := slices.Sorted(func(yield func(string) bool) {
		for k := range gates {
			if !yield(k) {
				return
			}
		}
	})
	users := []string{"alice", "bob"}
	conns := make([]*zclient.Conn, 2)
	for i, gname := range gateNames[:2] {
		conn, err := zclient.Dial(ctx, gates[gname])
		if err != nil {
			t.Fatalf("dial %s: %v", gname, err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		conns[i] = conn
		composeLogin(t, conn, users[i])
	}
	// The gates may still be catching up with the backends' registrations:
	// retry until the send is accepted.
	testkit.CheckFor(t, 15*time.Second, 100*time.Millisecond, func() error {
		if err := conns[0].Send(chat.MsgSend, []byte(`{"to":"bob","text":"hi from compose"}`)); err != nil {
			t.Fatal(err)
		}
		f := composeExpect(t, conns[0], chat.MsgSend, chat.MsgError)
		var r chat.SendReply
		if err := json.Unmarshal(f.Payload, &r); err != nil || !r.OK {
			return fmt.Errorf("send: %d %s", f.MsgID, f.Payload)
		}
		return nil
	})
	got := composeExpect(t, conns[1], chat.MsgDelivered)
	if !strings.Contains(string(got.Payload), "hi from compose") || !strings.Contains(string(got.Payload), "alice") {
		t.Fatalf("bob got %s", got.Payload)
	}

	// zcluster top sees every node and one session per gate.
	topOut, err := exec.Command(bin, "top", "-o", "json", "--etcd", strings.Join(etcd.Endpoints(), ","), "--redis", redisAddr).Output()
	if err != nil {
		t.Fatalf("top: %v", err)
	}
	var snap topview.Snapshot
	if err := json.Unmarshal(topOut, &snap); err != nil {
		t.Fatalf("top -o json: %v\n%s", err, topOut)
	}
	if len(snap.Nodes) != len(nodes) || snap.Sessions != 2 {
		t.Fatalf("top: %d nodes, %d sessions; want %d and 2\n%s", len(snap.Nodes), snap.Sessions, len(nodes), topOut)
	}
	// With no --id, ids are <group>-<hostname>-<random>: in a container the
	// hostname is the container id, so replicas differ.
	host, _ := os.Hostname()
	idRE := regexp.MustCompile(`^(gate|im|echo)-` + regexp.QuoteMeta(host) + `-[0-9a-f]{4}$`)
	ids := map[string]bool{}
	for _, n := range snap.Nodes {
		if !idRE.MatchString(n.ID) || n.Group != strings.SplitN(n.ID, "-", 2)[0] {
			t.Errorf("node id %q (group %s), want %s", n.ID, n.Group, idRE)
		}
		ids[n.ID] = true
	}
	if len(ids) != len(nodes) {
		t.Errorf("node ids not distinct: %v", ids)
	}

	// /metrics of the first gate counted the message routed to im.
	gate0 := nodes[slices.IndexFunc(nodes, func(n *composeNode) bool { return n.name == gateNames[0] })]
	body := httpGet(t, "http://"+gate0.httpAddr+"/metrics")
	if !strings.Contains(body, `zcluster_messages_in_total{group="im",msg_id="2"`) {
		t.Fatalf("gate /metrics has no message count for msgID 2 -> im:\n%s", grepLines(body, "zcluster_messages"))
	}
	// A backend exposes its own series and none of a gate's.
	im := nodes[slices.IndexFunc(nodes, func(n *composeNode) bool { return n.name == "im" })]
	body = httpGet(t, "http://"+im.httpAddr+"/metrics")
	if !strings.Contains(body, "\nzcluster_backend_queued{") || strings.Contains(body, "\nzcluster_client_connections") {
		t.Errorf("backend /metrics: want zcluster_backend_queued and no zcluster_client_connections:\n%s", grepLines(body, "zcluster_"))
	}

	// A clean stop exits 0; every log line was JSON; stdout stayed empty.
	for _, n := range nodes {
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, n := range nodes {
		select {
		case <-n.exited:
		case <-time.After(25 * time.Second):
			t.Fatalf("%s did not stop after SIGTERM", n.name)
		}
		if n.exitErr != nil {
			t.Errorf("%s: exit %v\n%s", n.name, n.exitErr, n.stderr.String())
		}
		if out := n.stdout.String(); out != "" {
			t.Errorf("%s printed on stdout (want nothing: logs go to stderr, no zinx banner):\n%s", n.name, out)
		}
		lines := strings.Split(strings.TrimSpace(n.stderr.String()), "\n")
		for _, line := range lines {
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Errorf("%s: log line is not JSON (ZC_LOG_FORMAT=json): %q", n.name, line)
			}
		}
		if !strings.Contains(n.stderr.String(), `"msg":"gate stopped"`) && !strings.Contains(n.stderr.String(), `"msg":"backend stopped"`) {
			t.Errorf("%s: no \"stopped\" line in its log", n.name)
		}
	}
}

func composeLogin(t *testing.T, conn *zclient.Conn, user string) {
	t.Helper()
	if err := conn.Send(chat.MsgLogin, []byte(user)); err != nil {
		t.Fatal(err)
	}
	f := composeExpect(t, conn, chat.MsgLogin)
	var r chat.LoginReply
	if err := json.Unmarshal(f.Payload, &r); err != nil || !r.OK {
		t.Fatalf("login %s: %s", user, f.Payload)
	}
}

// composeExpect returns the next frame with one of ids, skipping others.
func composeExpect(t *testing.T, conn *zclient.Conn, ids ...uint32) zclient.Frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		f, err := conn.Recv(ctx)
		if err != nil {
			t.Fatalf("waiting for msgID %v: %v", ids, err)
		}
		if slices.Contains(ids, f.MsgID) {
			return f
		}
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
