package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zcluster/zcluster/internal/tools/topview"
)

// requireDocker skips the test unless ZC_DOCKER=1. With it set, a Docker
// engine must answer, except on a developer machine (CI unset) with no
// engine, where the test skips saying so.
func requireDocker(t *testing.T) {
	t.Helper()
	if os.Getenv("ZC_DOCKER") != "1" {
		t.Skip("Docker test: set ZC_DOCKER=1 to run it (root, a Docker engine, docker-compose, debootstrap)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.Version}}").CombinedOutput()
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("ZC_DOCKER=1 but no Docker engine answers (docker version: %v: %s); skipping because CI is unset", err, bytes.TrimSpace(out))
		}
		t.Fatalf("no Docker engine answers (docker version: %v: %s)", err, bytes.TrimSpace(out))
	}
	if _, err := exec.LookPath("docker-compose"); err != nil {
		t.Fatalf("docker-compose not found (Debian: apt-get install docker-compose): %v", err)
	}
}

var (
	imagesOnce sync.Once
	imagesErr  error
	imagesTook time.Duration
	imagesTag  = fmt.Sprintf("test%d", os.Getpid())
	imagesMade bool
)

// TestMain removes the images this process built (the Debian base stays,
// cached for the next run).
func TestMain(m *testing.M) {
	code := m.Run()
	if imagesMade {
		for _, name := range []string{"zcluster", "etcd", "redis"} {
			_, _ = docker("image", "rm", "zcluster-local/"+name+":"+imagesTag)
		}
	}
	os.Exit(code)
}

// buildImages runs offline/build-images.sh once per test process.
func buildImages(t *testing.T) {
	t.Helper()
	imagesOnce.Do(func() {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		// A tag of this process's own: another checkout's test run on the
		// same engine cannot swap the images under it.
		cmd := exec.CommandContext(ctx, filepath.Join("offline", "build-images.sh"))
		cmd.Env = append(os.Environ(), "ZC_IMAGE_TAG="+imagesTag)
		out, err := cmd.CombinedOutput()
		imagesTook = time.Since(start)
		imagesMade = true
		if err != nil {
			imagesErr = fmt.Errorf("offline/build-images.sh: %v\n%s", err, out)
			return
		}
		t.Logf("images built offline in %v:\n%s", imagesTook.Round(time.Second), out)
	})
	if imagesErr != nil {
		t.Fatal(imagesErr)
	}
}

// topSnapshot is what `zcluster top -o json` prints.
type topSnapshot = topview.Snapshot

// stack is one compose project: deploy/docker-compose.yml with the offline
// override, extra files, and overrides the test writes.
type stack struct {
	t       *testing.T
	project string
	files   []string
	env     []string
}

// newStack returns a project named after the test and the process, whose
// gates publish their client port on a free 127.0.0.1 port. extra are
// compose files: paths under deploy/ or YAML text (written to a file).
// Cleanup unpauses what is paused, prints the logs if the test failed,
// and removes everything (down -v).
func newStack(t *testing.T, extra ...string) *stack {
	t.Helper()
	name := strings.ToLower(strings.TrimPrefix(t.Name(), "Test"))
	name = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, name)
	s := &stack{
		t:       t,
		project: fmt.Sprintf("zct%s%d", name, os.Getpid()),
		files:   []string{"docker-compose.yml", "docker-compose.offline.yml"},
		env: []string{"ZC_GATE1_PUBLISH=127.0.0.1:", "ZC_GATE2_PUBLISH=127.0.0.1:",
			"ZC_IMAGE_TAG=" + imagesTag, "ZC_ETCD_IMAGE=zcluster-local/etcd:" + imagesTag},
	}
	dir := t.TempDir()
	for i, e := range extra {
		if strings.Contains(e, "\n") {
			p := filepath.Join(dir, fmt.Sprintf("override-%d.yml", i))
			if err := os.WriteFile(p, []byte(e), 0o644); err != nil {
				t.Fatal(err)
			}
			e = p
		}
		s.files = append(s.files, e)
	}
	t.Cleanup(s.cleanup)
	return s
}

func (s *stack) args(args ...string) []string {
	a := []string{"-p", s.project}
	for _, f := range s.files {
		a = append(a, "-f", f)
	}
	return append(a, args...)
}

// compose runs docker-compose with args; it returns stdout, and an error
// carrying stderr.
func (s *stack) compose(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker-compose", s.args(args...)...)
	cmd.Env = append(os.Environ(), s.env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("docker-compose %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

func (s *stack) mustCompose(args ...string) string {
	s.t.Helper()
	out, err := s.compose(5*time.Minute, args...)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

// docker runs the docker CLI.
func docker(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

func mustDocker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := docker(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// label selects the project's objects.
func (s *stack) label() string { return "label=com.docker.compose.project=" + s.project }

// containers lists the ids of the project's containers (all states), of
// one service when service is not empty.
func (s *stack) containers(service string) []string {
	s.t.Helper()
	args := []string{"ps", "-a", "-q", "--no-trunc", "--filter", s.label()}
	if service != "" {
		args = append(args, "--filter", "label=com.docker.compose.service="+service)
	}
	return strings.Fields(mustDocker(s.t, args...))
}

// container returns the id of the only container of service.
func (s *stack) container(service string) string {
	s.t.Helper()
	ids := s.containers(service)
	if len(ids) != 1 {
		s.t.Fatalf("service %s: %d containers, want 1", service, len(ids))
	}
	return ids[0]
}

// waitHealthy waits until every container of the project runs and passes
// its healthcheck.
func (s *stack) waitHealthy(timeout time.Duration) time.Duration {
	s.t.Helper()
	start := time.Now()
	var last string
	for {
		ids := s.containers("")
		sick := []string{}
		if len(ids) == 0 {
			sick = append(sick, "no containers")
		} else {
			out, err := docker(append([]string{"inspect", "--format",
				"{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"}, ids...)...)
			if err != nil {
				sick = append(sick, err.Error())
			}
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				f := strings.Fields(line)
				if len(f) != 3 || f[1] != "running" || (f[2] != "healthy" && f[2] != "none") {
					sick = append(sick, line)
				}
			}
		}
		if len(sick) == 0 {
			return time.Since(start)
		}
		last = strings.Join(sick, "; ")
		if time.Since(start) > timeout {
			s.t.Fatalf("not healthy after %v: %s", timeout, last)
		}
		time.Sleep(time.Second)
	}
}

// gateAddr is the 127.0.0.1 address a gate's client port is published on.
func (s *stack) gateAddr(service string) string {
	s.t.Helper()
	out := strings.TrimSpace(s.mustCompose("port", service, "18001"))
	host, _, err := net.SplitHostPort(out)
	if err != nil || host != "127.0.0.1" {
		s.t.Fatalf("%s: client port published on %q, want 127.0.0.1:PORT", service, out)
	}
	return out
}

// top runs `zcluster top -o json` inside gate1's container.
func (s *stack) top() (topview.Snapshot, error) {
	var snap topview.Snapshot
	out, err := s.compose(time.Minute, "exec", "-T", "gate1", "zcluster", "top", "-o", "json")
	if err != nil {
		return snap, err
	}
	if err := json.Unmarshal([]byte(out), &snap); err != nil {
		return snap, fmt.Errorf("top -o json: %v\n%s", err, out)
	}
	return snap, nil
}

// nodesOf returns the ids of group's nodes in snap.
func nodesOf(snap topview.Snapshot, group string) []string {
	var ids []string
	for _, n := range snap.Nodes {
		if n.Group == group {
			ids = append(ids, n.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

// ip returns a container's address on the project's default network.
func (s *stack) ip(id string) string {
	s.t.Helper()
	out := strings.TrimSpace(mustDocker(s.t, "inspect", "--format",
		`{{range $k, $v := .NetworkSettings.Networks}}{{if eq $k "`+s.network()+`"}}{{$v.IPAddress}}{{end}}{{end}}`, id))
	if out == "" {
		s.t.Fatalf("container %.12s has no address on %s", id, s.network())
	}
	return out
}

// network is the project's default network.
func (s *stack) network() string { return s.project + "_default" }

// httpGet fetches http://host:port/path from inside the compose network,
// with bash's /dev/tcp in the Redis container (the zcluster image has no
// shell, and nothing of the network is published but the gates).
func (s *stack) httpGet(host string, port int, path string) (string, error) {
	script := fmt.Sprintf(`exec 3<>/dev/tcp/%s/%d && printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' >&3 && cat <&3`, host, port, path, host)
	return s.compose(30*time.Second, "exec", "-T", "redis", "bash", "-c", script)
}

// hostname is a container's hostname: the first 12 digits of its id, which
// the node ids (<group>-<hostname>-<random>) contain.
func hostname(id string) string { return id[:12] }

// cleanup unpauses, dumps logs on failure, and removes the project.
func (s *stack) cleanup() {
	t := s.t
	if out, err := docker("ps", "-q", "--filter", s.label(), "--filter", "status=paused"); err == nil {
		for _, id := range strings.Fields(out) {
			_, _ = docker("unpause", id)
		}
	}
	if t.Failed() {
		if out, err := s.compose(time.Minute, "logs", "--no-color", "--tail=60"); err == nil {
			t.Logf("compose logs (last lines per container):\n%s", out)
		}
	}
	if _, err := s.compose(3*time.Minute, "down", "-v", "--remove-orphans", "-t", "10"); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

// leftovers lists the project's containers, networks and volumes.
func (s *stack) leftovers() []string {
	s.t.Helper()
	var left []string
	for _, kind := range []string{"container", "network", "volume"} {
		args := []string{kind, "ls", "-q", "--filter", s.label()}
		if kind == "container" {
			args = []string{"ps", "-a", "-q", "--filter", s.label()}
		}
		for _, id := range strings.Fields(mustDocker(s.t, args...)) {
			left = append(left, kind+" "+id)
		}
	}
	return left
}

// execCombined runs a command with a 2-minute bound.
func execCombined(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	return string(out), err
}
