package zcluster

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// resolveFlags runs the real command line handling of command (gate or
// backend) with args, env and a config file, and returns the flag values
// the command would run with, instead of running it.
func resolveFlags(t *testing.T, command string, env map[string]string, args ...string) (map[string]string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	c := &cli{lookupEnv: envMap(env), stdin: strings.NewReader(""), stdout: &out, stderr: &errb}
	root := newRootCmd(c)
	cmd, _, err := root.Find([]string{command})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		for _, name := range []string{"etcd", "redis", "ttl", "session-ttl", "listen", "relay", "http", "insecure", "group", "log-level", "log-format"} {
			if f := cmd.Flags().Lookup(name); f != nil {
				got[name] = f.Value.String()
			}
		}
		return nil
	}
	root.SetArgs(append([]string{command}, args...))
	root.SetOut(&out)
	root.SetErr(&errb)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return got, root.ExecuteContext(ctx)
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "zcluster.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConfigPrecedence checks flags > env > file > defaults, key by key.
func TestConfigPrecedence(t *testing.T) {
	path := writeConfig(t, `
etcd: [10.0.0.1:2379, 10.0.0.2:2379]   # file only: a list becomes a comma list
redis: file:6379                        # env wins
ttl: 7s                                 # env and flag set it too: flag wins
http: ":9100"
insecure: true
log-level: debug                        # a global flag works from the file too
log-format: json
`)
	env := map[string]string{"ZC_REDIS": "env:6379", "ZC_TTL": "8s"}
	got, err := resolveFlags(t, "gate", env, "--config", path, "--ttl", "9s")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"etcd":        "10.0.0.1:2379,10.0.0.2:2379", // file
		"redis":       "env:6379",                    // env over file
		"ttl":         "9s",                          // flag over env and file
		"session-ttl": "30s",                         // default
		"listen":      ":18001",                      // default
		"http":        ":9100",                       // file
		"insecure":    "true",                        // file
		"log-level":   "debug",                       // file
		"log-format":  "json",                        // file
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s = %q, want %q", k, got[k], w)
		}
	}

	// The file can be named by the environment too, and a flag still wins
	// over the file for a global flag.
	got, err = resolveFlags(t, "backend", map[string]string{"ZC_CONFIG": writeConfig(t, "group: echo\nlog-level: warn\n")}, "--log-level", "error")
	if err != nil {
		t.Fatal(err)
	}
	if got["group"] != "echo" || got["log-level"] != "error" {
		t.Errorf("ZC_CONFIG file: group %q, log-level %q; want echo, error", got["group"], got["log-level"])
	}
}

func TestConfigFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, command, text, want string
	}{
		{"unknown key", "gate", "etcd: a:1\nsecrte: x\n", `unknown key "secrte"`},
		{"gate-only key in a backend's file", "backend", "listen: :18001\n", `unknown key "listen"`},
		{"bad value", "gate", "ttl: soon\n", `key "ttl"`},
		{"not a mapping", "gate", "- a\n- b\n", "config file"},
		{"nested value", "gate", "etcd: {a: b}\n", `key "etcd"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := resolveFlags(t, tc.command, nil, "--config", writeConfig(t, tc.text))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %s", err, tc.want)
			}
		})
	}
	_, err := resolveFlags(t, "gate", nil, "--config", filepath.Join(t.TempDir(), "missing.yaml"))
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file: err = %v", err)
	}
}

// TestGateHelpDocumentsEveryKey checks `zcluster gate --help` lists every
// flag as a config key with its environment variable.
func TestGateHelpDocumentsEveryKey(t *testing.T) {
	for _, command := range []string{"gate", "backend"} {
		code, out, _ := runCLI(t, nil, command, "--help")
		if code != 0 {
			t.Fatalf("%s --help: exit %d", command, code)
		}
		c := &cli{}
		root := newRootCmd(c)
		cmd, _, _ := root.Find([]string{command})
		var names []string
		cmd.LocalFlags().VisitAll(func(f *pflag.Flag) { names = append(names, f.Name) })
		names = append(names, "log-level", "log-format")
		for _, n := range names {
			if n == "help" || n == configFlag {
				continue
			}
			if !strings.Contains(out, "  "+n+":") || !strings.Contains(out, envName(n)) {
				t.Errorf("%s --help does not document key %q (%s)", command, n, envName(n))
			}
		}
		if !strings.Contains(out, "--config") {
			t.Errorf("%s --help does not mention --config", command)
		}
	}
}

// TestLogFormat checks --log-format json gives JSON lines and a bad value
// is refused.
func TestLogFormat(t *testing.T) {
	var buf bytes.Buffer
	log, err := buildLogger(&buf, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("registered", "node", "gate-1")
	if !strings.HasPrefix(buf.String(), `{"time":`) || !strings.Contains(buf.String(), `"msg":"registered","node":"gate-1"`) {
		t.Fatalf("json log line = %q", buf.String())
	}
	code, _, stderr := runCLI(t, nil, "version", "--log-format", "xml")
	if code == 0 || !strings.Contains(stderr, "--log-format") {
		t.Fatalf("bad --log-format: exit %d, %q", code, stderr)
	}
}
