package embedetcd

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func TestStopRestartKeepsDataAndPort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := Start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	eps := s.Endpoints()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "/k", "v"); err != nil {
		t.Fatal(err)
	}

	s.Stop()
	s.Stop() // no-op
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.Endpoints(); got[0] != eps[0] {
		t.Fatalf("endpoint moved from %s to %s", eps[0], got[0])
	}
	var resp *clientv3.GetResponse
	for {
		gctx, gcancel := context.WithTimeout(ctx, time.Second)
		resp, err = cli.Get(gctx, "/k")
		gcancel()
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("after restart: %v %v", resp, err)
	}

	s.Close()
	s.Close()
	if err := s.Restart(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Restart after Close: %v", err)
	}
}
