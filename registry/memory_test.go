package registry

import (
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestRouteMemory: the routes of a backend group stay known, as down, after
// its last node has gone (clean stop or lost lease), in a topology that saw
// them and in one started afterwards; a live claim of another group wins at
// once; gate routes and RouteMemory < 0 leave no memory.
func TestRouteMemory(t *testing.T) {
	e := startEtcd(t)
	cli := newClient(t, e.Endpoints())
	cfg := testConfig(t, cli, 2*time.Second)
	cfg.RouteMemory = time.Hour

	top, err := Watch(ctxT(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer top.Close()
	im1, err := Register(ctxT(t), cfg, testNode("im-1", "im", Route{MsgID: 2, Name: "send"}))
	if err != nil {
		t.Fatal(err)
	}
	gw, err := Register(ctxT(t), cfg, testNode("gate-1", GateGroup, Route{MsgID: 1, Name: "login"}))
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, ok := top.Route(2); !ok || top.RouteDown(2) {
			return errors.New("route 2 not live")
		}
		return nil
	})
	// The memory is written right after registration, on its own lease.
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		resp, err := cli.Get(ctxT(t), "/zcluster/known/2/im-1")
		if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 || clientv3.LeaseID(resp.Kvs[0].Lease) == im1.LeaseID() {
			return errors.New("no known key on a lease of its own")
		}
		return nil
	})
	if err := im1.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := gw.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if len(top.Nodes("im")) != 0 {
			return errors.New("im-1 still in topology")
		}
		if r, ok := top.Route(2); !ok || !top.RouteDown(2) || r.Group != "im" || r.Name != "send" {
			return errors.New("route 2 not remembered as down")
		}
		if _, ok := top.Route(1); ok {
			return errors.New("gate route 1 remembered")
		}
		return nil
	})
	// The node and route keys are gone; only the memory stays.
	for _, p := range []string{"/zcluster/nodes/", "/zcluster/routes/"} {
		if resp, err := cli.Get(ctxT(t), p, clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != 0 {
			t.Fatalf("%s: %d keys left after Close (%v)", p, resp.Count, err)
		}
	}

	// A topology started afterwards (a new gate) knows it too.
	top2, err := Watch(ctxT(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer top2.Close()
	if r, ok := top2.Route(2); !ok || !top2.RouteDown(2) || r.Group != "im" {
		t.Fatalf("new topology: route 2 = %+v %v down=%v, want im, down", r, ok, top2.RouteDown(2))
	}

	// Another group claims msgID 2: it is live there at once.
	other, err := Register(ctxT(t), cfg, testNode("chat-1", "chat", Route{MsgID: 2, Name: "send2"}))
	if err != nil {
		t.Fatalf("another group claiming a remembered msgID: %v", err)
	}
	defer other.Close(ctxT(t))
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if r, ok := top.Route(2); !ok || top.RouteDown(2) || r.Group != "chat" {
			return errors.New("route 2 not live in group chat")
		}
		return nil
	})

	// No memory with RouteMemory < 0.
	off := cfg
	off.RouteMemory = -1
	r9, err := Register(ctxT(t), off, testNode("x-1", "x", Route{MsgID: 9, Name: "nine"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := r9.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if resp, err := cli.Get(ctxT(t), "/zcluster/known/9/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != 0 {
		t.Fatalf("RouteMemory -1 wrote %d known keys (%v)", resp.Count, err)
	}
}
