// Package tailbuf keeps the last bytes written to it: the end of a child
// process's output, for the error that reports why it failed.
package tailbuf

import (
	"strings"
	"sync"
)

// Buffer keeps the last Max bytes written to it. Safe for concurrent use;
// the zero value with Max set is ready.
type Buffer struct {
	Max int

	mu sync.Mutex
	b  []byte
}

// Write implements io.Writer; it never fails.
func (t *Buffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.Max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.Max:]...)
	}
	return len(p), nil
}

// String returns what was kept, without surrounding white space.
func (t *Buffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}
