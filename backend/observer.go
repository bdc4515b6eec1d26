package backend

import "time"

// Observer receives the backend's countable events, for metrics. Handled is
// called once per message from the worker goroutines: it must be cheap, must
// not block, and must be safe for concurrent use.
type Observer interface {
	// Handled reports one message: its msgID, whether it came through Call,
	// how long the handler ran, and the error it returned (nil on success).
	Handled(msgID uint32, call bool, d time.Duration, err error)
}

// NopObserver ignores every event.
type NopObserver struct{}

var _ Observer = NopObserver{}

// Handled implements Observer.
func (NopObserver) Handled(uint32, bool, time.Duration, error) {}
