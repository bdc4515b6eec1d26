package registry

import (
	"fmt"
	"testing"
	"time"
)

// TestNodeLeavesAndComesBack: a node that leaves and registers again under
// the same id is in the view again, and so is its group.
func TestNodeLeavesAndComesBack(t *testing.T) {
	srv := startEtcd(t)
	cli := newClient(t, srv.Endpoints())
	cfg := testConfig(t, cli, 3*time.Second)
	top := watch(t, cfg)
	a := register(t, cfg, testNode("echo-1", "echo"))
	b := register(t, cfg, testNode("echo-2", "echo"))
	waitNodes := func(want int) {
		t.Helper()
		checkFor(t, 5*time.Second, 5*time.Millisecond, func() error {
			if n := len(top.Nodes("echo")); n != want {
				return fmt.Errorf("%d echo nodes, want %d", n, want)
			}
			return nil
		})
	}
	waitNodes(2)
	for round := 0; round < 5; round++ {
		_ = a.Close(ctxT(t))
		waitNodes(1)
		a = register(t, cfg, testNode("echo-1", "echo"))
		waitNodes(2)
		_ = b.Close(ctxT(t))
		waitNodes(1)
		if _, ok := top.Pick("echo", "k"); !ok {
			t.Fatal("no echo node picked")
		}
		b = register(t, cfg, testNode("echo-2", "echo"))
		waitNodes(2)
	}
}
