package deploy

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zcluster/zcluster/examples/chat"
)

// etcdMembers are the services of docker-compose.etcd3.yml.
var etcdMembers = []string{"etcd", "etcd2", "etcd3"}

// etcdLeader returns the service whose member leads the etcd cluster, as
// seen from member from.
func (s *stack) etcdLeader(from string, among []string) (string, error) {
	var eps []string
	for _, m := range among {
		eps = append(eps, m+":2379")
	}
	out, err := s.compose(time.Minute, "exec", "-T", from, "etcdctl", "--endpoints="+strings.Join(eps, ","),
		"--command-timeout=3s", "endpoint", "status", "-w", "json")
	if err != nil {
		return "", err
	}
	var st []struct {
		Endpoint string
		Status   struct {
			Header struct {
				MemberID uint64 `json:"member_id"`
			} `json:"header"`
			Leader uint64 `json:"leader"`
		}
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return "", fmt.Errorf("endpoint status: %v: %s", err, out)
	}
	for _, e := range st {
		if e.Status.Leader != 0 && e.Status.Header.MemberID == e.Status.Leader {
			return strings.TrimSuffix(e.Endpoint, ":2379"), nil
		}
	}
	return "", fmt.Errorf("no leader in %s", out)
}

// nodeIDs is every node id etcd lists, sorted.
func (s *stack) nodeIDs() ([]string, error) {
	snap, err := s.top()
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, n := range snap.Nodes {
		ids = append(ids, n.ID)
	}
	slices.Sort(ids)
	return ids, nil
}

// watchNodes checks every second for d that etcd lists exactly want; it
// returns how many checks were made and what differed.
func (s *stack) watchNodes(want []string, d time.Duration) (checks int, bad []string) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		ids, err := s.nodeIDs()
		checks++
		if err != nil {
			bad = append(bad, err.Error())
		} else if !slices.Equal(ids, want) {
			bad = append(bad, fmt.Sprintf("%v", ids))
		}
		time.Sleep(time.Second)
	}
	return checks, bad
}

// TestEtcdCluster runs the cluster on 3 etcd members (the etcd3 override)
// under a client load: the leader's container is killed (and started
// again), later one member is cut off the network (docker network
// disconnect, then connect). Every node stays registered under its id
// throughout, and no request fails.
func TestEtcdCluster(t *testing.T) {
	requireDocker(t)
	buildImages(t)
	s := newStack(t, "docker-compose.etcd3.yml", partitionOverride)
	s.mustCompose("up", "-d", "--scale", "im=2")
	s.waitHealthy(3 * time.Minute)
	g1, g2 := s.gateAddr("gate1"), s.gateAddr("gate2")
	var want []string
	waitFor(t, "all 5 nodes registered", time.Minute, func() (bool, error) {
		ids, err := s.nodeIDs()
		want = ids
		return err == nil && len(ids) == 5, err
	})
	l := startLoad(t, []string{g1, g2}, 16, "etcd3", 20*time.Millisecond)
	l.waitAnswers(t, 500, time.Minute)
	t0 := time.Now()

	// The leader's container is killed.
	leader, err := s.etcdLeader("etcd", etcdMembers)
	if err != nil {
		t.Fatal(err)
	}
	lc := s.container(leader)
	mustDocker(t, "kill", lc)
	t.Logf("killed the etcd leader %s", leader)
	var rest []string
	for _, m := range etcdMembers {
		if m != leader {
			rest = append(rest, m)
		}
	}
	elected := waitFor(t, "a new etcd leader", time.Minute, func() (bool, error) {
		nl, err := s.etcdLeader(rest[0], rest)
		return err == nil && nl != leader, err
	})
	checks, bad := s.watchNodes(want, 15*time.Second)
	t.Logf("leader killed: a new leader within %v (polled through docker exec); %d checks of the node list over 15s, %d differed %v", elected.Round(100*time.Millisecond), checks, len(bad), bad)
	if len(bad) != 0 {
		t.Errorf("nodes not all registered while the leader was down: %v", bad)
	}
	mustDocker(t, "start", lc) // a no-op if its restart policy already did
	s.waitHealthy(2 * time.Minute)
	killSum := summarize(l.replies(), t0)
	t.Logf("load from the kill to the member's return: %v", killSum)

	// One member is cut off the network: the one most nodes' etcd
	// clients are connected to, so that they must notice and move.
	t1 := time.Now()
	part, users := s.busiestMember(t)
	if users == 0 {
		t.Fatalf("no node is connected to any etcd member")
	}
	pc := s.container(part)
	mustDocker(t, "network", "disconnect", s.network(), pc)
	t.Logf("disconnected etcd member %s (%d etcd connections of nodes) from the network", part, users)
	checks, bad = s.watchNodes(want, 15*time.Second)
	t.Logf("member partitioned: %d checks of the node list over 15s, %d differed %v", checks, len(bad), bad)
	if len(bad) != 0 {
		t.Errorf("nodes not all registered while a member was partitioned: %v", bad)
	}
	mustDocker(t, "network", "connect", "--alias", part, s.network(), pc)
	s.waitHealthy(2 * time.Minute)
	l.waitAnswers(t, 200, time.Minute)
	l.stop()
	partSum := summarize(l.replies(), t1)
	t.Logf("load from the partition to the member's return: %v", partSum)
	if ids, err := s.nodeIDs(); err != nil || !slices.Equal(ids, want) {
		t.Errorf("nodes after both faults: %v (%v), want %v", ids, err, want)
	}
	all := summarize(l.replies(), t0)
	if all.errFrames != 0 || all.silent != 0 {
		t.Errorf("requests failed around the etcd faults: %v", all)
	}
	if n := len(nodesOf(mustTop(t, s), chat.GroupIM)); n != 2 {
		t.Errorf("%d im nodes at the end", n)
	}
}

// busiestMember returns the etcd member with the most connections from
// the zcluster containers (read with ss in their network namespaces).
func (s *stack) busiestMember(t *testing.T) (string, int) {
	t.Helper()
	byIP := map[string]string{}
	for _, m := range etcdMembers {
		byIP[s.ip(s.container(m))] = m
	}
	count := map[string]int{}
	for _, svc := range []string{"gate1", "gate2", "im", "echo"} {
		for _, id := range s.containers(svc) {
			out, err := runCmd("nsenter", "-t", s.pid(id), "-n", "ss", "-Htn", "state", "established", "( dport = :2379 )")
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				f := strings.Fields(line)
				if len(f) == 0 {
					continue
				}
				host, _, _ := strings.Cut(f[len(f)-1], ":")
				if m, ok := byIP[host]; ok {
					count[m]++
				}
			}
		}
	}
	best := etcdMembers[0]
	for _, m := range etcdMembers {
		if count[m] > count[best] {
			best = m
		}
	}
	t.Logf("etcd connections of the nodes per member: %v", count)
	return best, count[best]
}

func mustTop(t *testing.T, s *stack) (snap topSnapshot) {
	t.Helper()
	snap, err := s.top()
	if err != nil {
		t.Fatal(err)
	}
	return snap
}
