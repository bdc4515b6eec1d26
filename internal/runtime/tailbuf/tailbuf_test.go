package tailbuf

import (
	"fmt"
	"testing"
)

func TestKeepsTheTail(t *testing.T) {
	b := &Buffer{Max: 10}
	for i := range 20 {
		fmt.Fprintf(b, "%d", i%10)
	}
	if got := b.String(); got != "0123456789" {
		t.Fatalf("kept %q", got)
	}
	fmt.Fprint(b, "  ab \n")
	if got := b.String(); got != "6789  ab" {
		t.Fatalf("kept %q", got)
	}
}
