package gate

// Observer receives the gate's countable events, for metrics. Methods are
// called on hot paths (once per client frame) from many goroutines: they
// must be cheap, must not block, and must be safe for concurrent use.
type Observer interface {
	// ConnOpened and ConnClosed bracket every client connection; transport
	// is "tcp", "ws" or "kcp".
	ConnOpened(transport string)
	ConnClosed(transport string)
	// LoggedIn counts successful logins; Kicked counts sessions closed by a
	// kick (takeover, backend Kick, shutdown notice not included).
	LoggedIn()
	Kicked()
	// MessageIn counts a client frame and the group it was routed to
	// ("gate" for gate handlers, "" when it could not be routed).
	MessageIn(msgID uint32, group string)
	// MessageOut counts a frame written to a client (reply, push, broadcast).
	MessageOut(msgID uint32)
	// ErrorFrame counts an error frame sent for msgID.
	ErrorFrame(msgID uint32)
}

// NopObserver ignores every event.
type NopObserver struct{}

var _ Observer = NopObserver{}

// ConnOpened implements Observer.
func (NopObserver) ConnOpened(string) {}

// ConnClosed implements Observer.
func (NopObserver) ConnClosed(string) {}

// LoggedIn implements Observer.
func (NopObserver) LoggedIn() {}

// Kicked implements Observer.
func (NopObserver) Kicked() {}

// MessageIn implements Observer.
func (NopObserver) MessageIn(uint32, string) {}

// MessageOut implements Observer.
func (NopObserver) MessageOut(uint32) {}

// ErrorFrame implements Observer.
func (NopObserver) ErrorFrame(uint32) {}
