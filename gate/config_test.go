package gate

import (
	"errors"
	"strings"
	"testing"
)

// validate reports every problem at once, in one error matching ErrConfig.
func TestValidateReportsEveryProblem(t *testing.T) {
	c := Config{MaxFrame: 8, WSPath: "ws", ClientRate: -1, TLSCertFile: "c.pem"}
	c.setDefaults()
	err := c.validate()
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("err = %v, want ErrConfig", err)
	}
	for _, want := range []string{"id is required", "etcd client", "redis client", "secret", "max frame 8", "websocket path", "client rate", "client TLS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not mention %q", err, want)
		}
	}
}
