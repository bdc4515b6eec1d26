package waitgroup

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestWait(t *testing.T) {
	var wg sync.WaitGroup
	if err := Wait(context.Background(), &wg); err != nil {
		t.Fatalf("empty group: %v", err)
	}
	wg.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := Wait(ctx, &wg); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("group still running: %v, want the ctx's error", err)
	}
	go wg.Done()
	if err := Wait(context.Background(), &wg); err != nil {
		t.Fatalf("group finished: %v", err)
	}
}
