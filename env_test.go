package zcluster

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// envMap is a fake environment.
func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// parseNode defines the flags of a node of kind, parses args and applies env.
func parseNode(t *testing.T, kind nodeKind, args []string, env map[string]string) (*nodeFlags, error) {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	f := &nodeFlags{apps: &appSet{{Name: "chat"}}}
	bindNodeFlags(fs, f, kind)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	return f, applyEnv(fs, envMap(env))
}

func TestEnvName(t *testing.T) {
	for flag, want := range map[string]string{
		"etcd": "ZC_ETCD", "etcd-prefix": "ZC_ETCD_PREFIX", "session-ttl": "ZC_SESSION_TTL",
		"max-frame": "ZC_MAX_FRAME", "log-level": "ZC_LOG_LEVEL",
	} {
		if got := envName(flag); got != want {
			t.Errorf("envName(%q) = %q, want %q", flag, got, want)
		}
	}
}

func TestEnvAppliedWhenFlagNotGiven(t *testing.T) {
	f, err := parseNode(t, kindGate, nil, map[string]string{
		"ZC_ETCD":          "10.0.0.1:2379,10.0.0.2:2379",
		"ZC_ETCD_PREFIX":   "/other",
		"ZC_REDIS":         "10.0.0.3:6379",
		"ZC_SECRET":        "s3",
		"ZC_TTL":           "7s",
		"ZC_SESSION_TTL":   "1m",
		"ZC_MAX_FRAME":     "1024",
		"ZC_MAX_INFLIGHT":  "8",
		"ZC_LOGIN_TIMEOUT": "3s",
		"ZC_IDLE_TIMEOUT":  "0",
		"ZC_MAX_CONNS":     "7",
		"ZC_CLIENT_RATE":   "2.5",
		"ZC_REDIS_PREFIX":  "other:",
		"ZC_INSECURE":      "true",
		"ZC_ID":            "gate-env",
		"ZC_LISTEN":        "127.0.0.1:1",
		"ZC_RELAY":         "127.0.0.1:2",
		"ZC_ADVERTISE":     "10.0.0.9",
		"ZC_APP":           "chat",
		"ZC_WS_LISTEN":     "127.0.0.1:3",
		"ZC_WS_ORIGINS":    "https://a.example,b.example",
		"ZC_KCP_LISTEN":    "127.0.0.1:4",
		"ZC_INBOX_MAX":     "50",
		"ZC_INBOX_TTL":     "2h",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := nodeFlags{
		id: "gate-env", listen: "127.0.0.1:1", maxFrame: 1024, maxInflight: 8, loginTimeout: 3 * time.Second, maxConns: 7, clientRate: 2.5, relay: "127.0.0.1:2", advertise: "10.0.0.9",
		etcd: "10.0.0.1:2379,10.0.0.2:2379", etcdPrefix: "/other", redisPrefix: "other:", redis: "10.0.0.3:6379",
		secret: "s3", insecure: true, ttl: 7 * time.Second, sessionTTL: time.Minute, app: "chat",
		wsListen: "127.0.0.1:3", wsPath: "/ws", wsOrigins: "https://a.example,b.example", kcpListen: "127.0.0.1:4",
		inboxMax: 50, inboxTTL: 2 * time.Hour,
	}
	want.apps = f.apps
	if *f != want {
		t.Fatalf("flags from env:\n got %+v\nwant %+v", *f, want)
	}
}

func TestFlagWinsOverEnv(t *testing.T) {
	f, err := parseNode(t, kindBackend,
		[]string{"--etcd", "flag:2379", "--group", "echo", "--ttl", "3s"},
		map[string]string{"ZC_ETCD": "env:2379", "ZC_GROUP": "im", "ZC_TTL": "9s", "ZC_REDIS": "env:6379"})
	if err != nil {
		t.Fatal(err)
	}
	if f.etcd != "flag:2379" || f.group != "echo" || f.ttl != 3*time.Second {
		t.Errorf("flag lost to env: etcd=%q group=%q ttl=%v", f.etcd, f.group, f.ttl)
	}
	if f.redis != "env:6379" {
		t.Errorf("redis = %q, want the env value", f.redis)
	}
}

func TestEnvDefaultsWhenUnsetOrEmpty(t *testing.T) {
	f, err := parseNode(t, kindGate, nil, map[string]string{"ZC_ETCD": ""})
	if err != nil {
		t.Fatal(err)
	}
	if f.etcd != "127.0.0.1:2379" || f.ttl != 10*time.Second || f.listen != ":18001" || f.relay != ":19001" {
		t.Errorf("defaults: %+v", *f)
	}
}

func TestEnvBadValueNamesVariable(t *testing.T) {
	_, err := parseNode(t, kindGate, nil, map[string]string{"ZC_TTL": "soon"})
	if err == nil || !strings.Contains(err.Error(), "ZC_TTL") {
		t.Fatalf("err = %v, want one naming ZC_TTL", err)
	}
}

func TestUsageNamesEnv(t *testing.T) {
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	bindNodeFlags(fs, &nodeFlags{}, kindBackend)
	fs.VisitAll(func(f *pflag.Flag) {
		if !strings.Contains(f.Usage, "$"+envName(f.Name)) {
			t.Errorf("--%s usage %q does not name %s", f.Name, f.Usage, envName(f.Name))
		}
	})
}

// runCLI runs the binary's entry point in-process.
func runCLI(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	code = run(ctx, args, envMap(env), strings.NewReader(""), &out, &errb, WithApp(App{Name: "chat"}))
	return code, out.String(), errb.String()
}

func TestRunFailuresAreOneLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"bad env value", map[string]string{"ZC_TTL": "soon"}, []string{"gate"}, "ZC_TTL"},
		{"bad log level from env", map[string]string{"ZC_LOG_LEVEL": "loud"}, []string{"version"}, "log-level"},
		{"missing secret", nil, []string{"gate"}, "--secret"},
		{"missing group", map[string]string{"ZC_SECRET": "s"}, []string{"backend"}, "--group"},
		{"unknown app", nil, []string{"backend", "--group", "im", "--secret", "s", "--app", "nope"}, `unknown --app "nope"`},
		{"unknown flag", nil, []string{"gate", "--nope"}, "unknown flag"},
		{"unknown command", nil, []string{"nope"}, "unknown command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tc.env, tc.args...)
			if code == 0 {
				t.Fatalf("exit 0, want failure")
			}
			if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "zcluster: ") || !strings.Contains(stderr, tc.want) {
				t.Fatalf("stderr = %q, want one line mentioning %q", stderr, tc.want)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runCLI(t, nil, "version")
	if code != 0 || !strings.HasPrefix(out, "zcluster ") {
		t.Fatalf("version: exit %d, %q", code, out)
	}
}
