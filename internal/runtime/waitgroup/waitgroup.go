// Package waitgroup waits for a sync.WaitGroup no longer than a context
// allows.
package waitgroup

import (
	"context"
	"sync"
)

// Wait waits until wg's counter is zero or ctx ends. It returns nil if the
// group finished (also when ctx ended at the same moment), else ctx's
// error. When ctx ends first, one goroutine stays behind until the group
// finishes.
func Wait(ctx context.Context, wg *sync.WaitGroup) error {
	finished := make(chan struct{})
	go func() {
		wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
		select {
		case <-finished:
			return nil
		default:
			return ctx.Err()
		}
	}
}
