package redisrun

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrNoRedisCLI is returned (wrapped) by StartCluster when no redis-cli
// binary is on PATH.
var ErrNoRedisCLI = errors.New("redisrun: redis-cli not found on PATH")

// clusterBusOffset is how far above its port a cluster node listens for
// its peers (fixed by Redis).
const clusterBusOffset = 10000

// clusterNodeTimeout is --cluster-node-timeout: short, so that a test sees
// failure detection quickly.
const clusterNodeTimeout = 2 * time.Second

// Cluster is a Redis Cluster of redis-server child processes on loopback
// ports, every node a master holding a share of the 16384 slots, no
// replicas. Its methods are safe for concurrent use.
type Cluster struct {
	addrs   []string
	version string
	dir     string

	mu     sync.Mutex
	nodes  []*child
	closed bool
}

// StartCluster starts n >= 3 `redis-server --cluster-enabled yes` processes
// on 127.0.0.1 (each with its own directory and cluster config file,
// persistence off, a short --cluster-node-timeout), joins them with
// `redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes`, and
// waits until every node reports cluster_state:ok and knows every other;
// ctx bounds it all. The children die with this process on Linux; Close
// stops them and removes their directories. It returns an error wrapping
// ErrNoRedisServer or ErrNoRedisCLI if a binary is missing.
func StartCluster(ctx context.Context, n int) (*Cluster, error) {
	if n < 3 {
		return nil, fmt.Errorf("redisrun: a Redis Cluster needs at least 3 masters, not %d", n)
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoRedisServer, err)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoRedisCLI, err)
	}
	version, err := serverVersion(ctx, bin)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "zc-redis-cluster-")
	if err != nil {
		return nil, fmt.Errorf("redisrun: temp dir: %w", err)
	}
	c := &Cluster{version: version, dir: dir}
	for i := range n {
		ndir := filepath.Join(dir, fmt.Sprintf("node%d", i))
		if err := os.Mkdir(ndir, 0o700); err != nil {
			c.Close()
			return nil, fmt.Errorf("redisrun: node dir: %w", err)
		}
		var lastErr error
		for range startAttempts {
			port, err := freeClusterPort()
			if err != nil {
				lastErr = err
				break
			}
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			ch, err := startClusterNode(ctx, bin, ndir, addr)
			lastErr = err
			if err == nil {
				c.mu.Lock()
				c.nodes = append(c.nodes, ch)
				c.addrs = append(c.addrs, addr)
				c.mu.Unlock()
				break
			}
			if ctx.Err() != nil {
				break
			}
		}
		if lastErr != nil {
			c.Close()
			return nil, lastErr
		}
	}

	args := append([]string{"--cluster", "create"}, c.addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("redisrun: redis-cli --cluster create: %w (output: %q)", err, tail(out, 2048))
	}
	if err := c.waitOK(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Addrs returns the nodes' addresses (host:port), all masters. A client
// given all of them (or any one, in cluster mode) finds the slot map.
func (c *Cluster) Addrs() []string { return append([]string(nil), c.addrs...) }

// Kind describes the cluster, e.g. "Redis Cluster of 3 masters (redis-server 7.0.15)".
func (c *Cluster) Kind() string {
	return fmt.Sprintf("Redis Cluster of %d masters (redis-server %s)", len(c.addrs), c.version)
}

// Close kills every node, waits for them and removes their directories. It
// is safe to call more than once.
func (c *Cluster) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	for _, ch := range c.nodes {
		ch.stop()
	}
	c.nodes = nil
	_ = os.RemoveAll(c.dir)
}

// waitOK polls CLUSTER INFO on every node until each reports
// cluster_state:ok and cluster_known_nodes equal to the cluster's size.
func (c *Cluster) waitOK(ctx context.Context) error {
	want := strconv.Itoa(len(c.addrs))
	var last error
	for {
		last = nil
		for _, addr := range c.addrs {
			info, err := command(ctx, addr, "CLUSTER INFO")
			if err != nil {
				last = fmt.Errorf("%s: %w", addr, err)
				break
			}
			if v := infoField(info, "cluster_state"); v != "ok" {
				last = fmt.Errorf("%s: cluster_state:%s", addr, v)
				break
			}
			if v := infoField(info, "cluster_known_nodes"); v != want {
				last = fmt.Errorf("%s: cluster_known_nodes:%s, want %s", addr, v, want)
				break
			}
		}
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redisrun: cluster not ok: %w (last: %v)", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// infoField returns the value of key in an INFO-style "key:value" text.
func infoField(info, key string) string {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+":"); ok {
			return v
		}
	}
	return ""
}

// command sends one inline command to addr and returns its reply, which
// must be a simple string or a bulk string.
func command(ctx context.Context, addr, cmd string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := conn.Write([]byte(cmd + "\r\n")); err != nil {
		return "", err
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	switch {
	case strings.HasPrefix(line, "+"):
		return line[1:], nil
	case strings.HasPrefix(line, "$"):
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", fmt.Errorf("reply %q", line)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	default:
		return "", fmt.Errorf("reply %q", line)
	}
}

// startClusterNode runs a cluster-enabled redis-server on addr with its
// files in dir and waits until it answers PING.
func startClusterNode(ctx context.Context, bin, dir, addr string) (*child, error) {
	return startChild(ctx, bin, dir, addr,
		"--cluster-enabled", "yes",
		"--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", strconv.FormatInt(clusterNodeTimeout.Milliseconds(), 10),
	)
}

// freeClusterPort returns a loopback port that was free a moment ago and
// whose cluster bus port (port+10000) was free too. Ports come from
// [20000, 30000), below the usual ephemeral range, so that the bus port is
// valid.
func freeClusterPort() (int, error) {
	var last error
	for range 50 {
		port := 20000 + rand.IntN(10000)
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			last = err
			continue
		}
		bus, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+clusterBusOffset)))
		_ = ln.Close()
		if err != nil {
			last = err
			continue
		}
		_ = bus.Close()
		return port, nil
	}
	return 0, fmt.Errorf("redisrun: no free port pair for a cluster node: %w", last)
}

// tail returns the last max bytes of b as a trimmed string.
func tail(b []byte, max int) string {
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return strings.TrimSpace(string(b))
}
