package zcluster

import (
	"context"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
)

func TestDefaultID(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Skip(err)
	}
	re := regexp.MustCompile("^im-" + regexp.QuoteMeta(host) + "-[0-9a-f]{4}$")
	seen := map[string]bool{}
	for range 20 {
		id := defaultID("im")
		if !re.MatchString(id) {
			t.Fatalf("defaultID = %q, want %s", id, re)
		}
		seen[id] = true
	}
	if len(seen) < 2 {
		t.Fatalf("20 ids, %d distinct: not random", len(seen))
	}
}

func TestCheckFillsID(t *testing.T) {
	g, err := parseNode(t, kindGate, []string{"--secret", "s"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.check(kindGate); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(g.id, "gate-") {
		t.Errorf("gate id = %q, want gate-<host>-<hex>", g.id)
	}
	b, err := parseNode(t, kindBackend, []string{"--secret", "s"}, map[string]string{"ZC_GROUP": "echo"})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.check(kindBackend); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(b.id, "echo-") {
		t.Errorf("backend id = %q, want echo-<host>-<hex>", b.id)
	}
	// A given id, from a flag or the environment, is kept.
	for _, tc := range []struct {
		args []string
		env  map[string]string
	}{
		{[]string{"--id", "im-7", "--group", "im", "--insecure"}, nil},
		{[]string{"--group", "im", "--insecure"}, map[string]string{"ZC_ID": "im-7"}},
	} {
		f, err := parseNode(t, kindBackend, tc.args, tc.env)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.check(kindBackend); err != nil {
			t.Fatal(err)
		}
		if f.id != "im-7" {
			t.Errorf("%v %v: id = %q, want im-7", tc.args, tc.env, f.id)
		}
	}
}

func TestCheckRejects(t *testing.T) {
	for _, tc := range []struct {
		kind nodeKind
		args []string
		want string
	}{
		{kindGate, nil, "--secret"},
		{kindBackend, []string{"--secret", "s"}, "--group"},
		{kindGate, []string{"--secret", "s", "--ttl", "100ms"}, "--ttl"},
		{kindGate, []string{"--insecure", "--session-ttl", "0s"}, "--session-ttl"},
		{kindGate, []string{"--insecure", "--app", "game"}, "game"},
		{kindGate, []string{"--insecure", "--max-inflight", "0"}, "--max-inflight"},
		{kindGate, []string{"--insecure", "--max-conns", "0"}, "--max-conns"},
		{kindGate, []string{"--insecure", "--login-timeout", "-1s"}, "--login-timeout"},
		{kindGate, []string{"--insecure", "--idle-timeout", "-1s"}, "--idle-timeout"},
		{kindGate, []string{"--insecure", "--client-rate", "-3"}, "--client-rate"},
	} {
		f, err := parseNode(t, tc.kind, tc.args, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.check(tc.kind); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %v: err = %v, want one mentioning %q", tc.kind, tc.args, err, tc.want)
		}
	}
}

func TestEndpoints(t *testing.T) {
	got := splitList(" a:1, ,https://b:2,")
	if len(got) != 2 || got[0] != "a:1" || got[1] != "https://b:2" {
		t.Fatalf("splitList = %q", got)
	}
	if u := etcdURL("a:1"); u != "http://a:1" {
		t.Errorf("etcdURL(a:1) = %q", u)
	}
	if u := etcdURL("https://b:2"); u != "https://b:2" {
		t.Errorf("etcdURL(https://b:2) = %q", u)
	}
}

func TestReadinessExtraChecks(t *testing.T) {
	full := true
	ready := readiness(func() bool { return true }, func(context.Context) error { return nil }, func() error {
		if full {
			return errors.New("gate full")
		}
		return nil
	})
	if err := ready(context.Background()); err == nil || !strings.Contains(err.Error(), "gate full") {
		t.Fatalf("full gate: ready = %v, want gate full", err)
	}
	full = false
	if err := ready(context.Background()); err != nil {
		t.Fatalf("gate with room: ready = %v", err)
	}
}
