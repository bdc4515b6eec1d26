package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/zcluster/zcluster"
)

func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// runCLI runs the zcluster binary's command line in-process.
func runCLI(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	opts := append(options(), zcluster.WithStdio(strings.NewReader(""), &out, &errb), zcluster.WithLookupEnv(envMap(env)))
	code = zcluster.Run(ctx, args, chatApp(), opts...)
	return code, out.String(), errb.String()
}

func TestChatCommandFailuresAreOneLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"too few gates", []string{"demo", "--gates", "1"}, "--gates"},
		{"chat without user", []string{"chat"}, "--user"},
		{"unknown app", []string{"backend", "--group", "im", "--secret", "s", "--app", "nope"}, "applications of this binary are: chat"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, nil, tc.args...)
			if code == 0 {
				t.Fatalf("exit 0, want failure")
			}
			if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "zcluster: ") || !strings.Contains(stderr, tc.want) {
				t.Fatalf("stderr = %q, want one line mentioning %q", stderr, tc.want)
			}
		})
	}
}
