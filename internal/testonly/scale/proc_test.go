package scale

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zcluster/zcluster/internal/runtime/freeport"
	"github.com/zcluster/zcluster/internal/runtime/tailbuf"
)

// proc is a zcluster node running as a child process.
type proc struct {
	name   string
	cmd    *exec.Cmd
	out    *tailbuf.Buffer
	exited chan struct{}
}

// startProc runs the zcluster binary with args as a child that dies with
// the test process (Pdeathsig). Cleanup stops it with SIGTERM (SIGKILL after
// 15s) and prints its last output if the test failed.
func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	bin := zclusterBinary(t)
	cmd := exec.Command(bin, args...)
	out := &tailbuf.Buffer{Max: 16 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), "ZC_LOG_LEVEL=warn")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Errorf("start %s: %v", name, err)
		return &proc{name: name, cmd: cmd, out: out, exited: closedChan()}
	}
	p := &proc{name: name, cmd: cmd, out: out, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s output (tail):\n%s", name, out.String())
		}
	})
	return p
}

// stop sends SIGTERM and waits for the exit, killing after 15s.
func (p *proc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// startProcRetry is startProc for a node that listens on ports picked just
// before: argsFor builds the arguments with fresh addresses. If the process
// exits within a second because its address is in use (another process took
// the port in between) it is started again, up to 3 times. It may run on
// any goroutine: on failure it marks the test failed and returns nil.
func startProcRetry(t *testing.T, name string, argsFor func() []string) *proc {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p := startProc(t, name, argsFor()...)
		select {
		case <-p.exited:
			out := p.out.String()
			if attempt < 3 && strings.Contains(out, "address already in use") {
				continue
			}
			t.Errorf("%s exited at start: %v\n%s", name, p.cmd.ProcessState, p.out.String())
			return nil
		case <-time.After(time.Second):
			return p
		}
	}
}

// freeAddrs returns n distinct loopback addresses whose ports were free a
// moment ago (all held open together while picking, so none repeats).
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	ports, err := freeport.PickN("127.0.0.1", n)
	if err != nil {
		t.Fatalf("free ports: %v", err)
	}
	out := make([]string, n)
	for i, p := range ports {
		out[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	}
	return out
}

// alive fails with the process's output if it has exited.
func (p *proc) alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited: %v\n%s", p.name, p.cmd.ProcessState, p.out.String())
	default:
		return nil
	}
}

// rssKiB reads VmRSS of the process from /proc.
func (p *proc) rssKiB() (int64, error) { return rssOf(p.cmd.Process.Pid) }

// rssOf reads VmRSS (KiB) of pid from /proc/<pid>/status.
func rssOf(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// waitCtx returns a context bounded to d, cancelled at cleanup.
func waitCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// closedChan returns a closed channel.
func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}
