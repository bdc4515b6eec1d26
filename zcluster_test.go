package zcluster

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/zcluster/zcluster/backend"
)

// A binary of one's own gets the node commands under its own name, its
// application as the default --app, and its own commands.
func TestRunOwnBinary(t *testing.T) {
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		code := Run(ctx, args, App{Name: "game"},
			WithName("game"),
			WithStdio(strings.NewReader(""), &out, &errb),
			WithLookupEnv(func(string) (string, bool) { return "", false }),
			WithCommand(func(e *Env) *cobra.Command {
				return &cobra.Command{Use: "hello", RunE: func(*cobra.Command, []string) error {
					e.Logger().Debug("not shown at info")
					_, err := e.Stdout().Write([]byte("hello from " + e.Name() + "\n"))
					return err
				}}
			}))
		return code, out.String(), errb.String()
	}
	if code, out, _ := run("hello"); code != 0 || out != "hello from game\n" {
		t.Fatalf("hello: exit %d, %q", code, out)
	}
	code, out, _ := run("backend", "--help")
	if code != 0 || !strings.Contains(out, `(default "game")`) || !strings.Contains(out, "game backend --id") {
		t.Fatalf("backend --help: exit %d, want --app default game and examples naming game:\n%s", code, out)
	}
	for _, cmd := range []string{"gate", "backend", "top", "routes", "health", "version"} {
		if code, _, errOut := run(cmd, "--help"); code != 0 {
			t.Errorf("%s --help: exit %d: %s", cmd, code, errOut)
		}
	}
	if code, _, errOut := run("backend", "--group", "g", "--insecure", "--app", "chat"); code == 0 || errOut != "game: unknown --app \"chat\": the applications of this binary are: game\n" {
		t.Fatalf("unknown app: exit %d, stderr %q", code, errOut)
	}
}

// The demo of a binary of one's own starts its application's cluster.
func TestOwnBinaryDemo(t *testing.T) {
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	setups := 0
	app := App{
		Name: "game", Groups: []string{"game"},
		Backend: func(b *backend.Backend) error {
			setups++
			b.Handle(500, "ping", func(c *backend.Context) error { return c.Reply(500, nil) })
			return nil
		},
	}
	code := Run(ctx, []string{"demo", "--once", "--gates", "1"}, app, WithName("game"),
		WithStdio(strings.NewReader(""), &out, &errb), WithLookupEnv(func(string) (string, bool) { return "", false }))
	if code != 0 || !strings.Contains(out.String(), "game-1 (game)") || !strings.Contains(out.String(), "gate-1 (clients 127.0.0.1:") || setups != 1 {
		t.Fatalf("demo --once: exit %d, %d setups\nstdout:\n%s\nstderr:\n%s", code, setups, out.String(), errb.String())
	}
	code = Run(ctx, []string{"demo", "--once"}, App{Name: "nogroups"},
		WithStdio(strings.NewReader(""), &out, &errb), WithLookupEnv(func(string) (string, bool) { return "", false }))
	if code == 0 || !strings.Contains(errb.String(), "App.Groups") {
		t.Fatalf("demo without groups: exit %d, %q", code, errb.String())
	}
}
