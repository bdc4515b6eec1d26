package zcluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/zcluster/zcluster/backend"
)

// TestBackendDispatchFlags: the backend's dispatch bounds come from flags,
// ZC_* variables or config keys, default to backend.DefaultConfig, and
// refuse values below 1.
func TestBackendDispatchFlags(t *testing.T) {
	d := backend.DefaultConfig()
	f, err := parseNode(t, kindBackend, []string{"--group", "im", "--insecure"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.workers != d.Workers || f.sessionQueue != d.QueueLen || f.sessionQueueBytes != d.SessionQueueBytes || f.queueBytes != d.QueueBytes || f.maxCalls != d.MaxCalls {
		t.Errorf("defaults %+v differ from backend.DefaultConfig", f)
	}
	f, err = parseNode(t, kindBackend, []string{"--group", "im", "--insecure", "--workers", "8", "--session-queue", "32"},
		map[string]string{"ZC_SESSION_QUEUE_BYTES": "65536", "ZC_QUEUE_BYTES": "1048576", "ZC_MAX_CALLS": "16", "ZC_WORKERS": "99"})
	if err != nil {
		t.Fatal(err)
	}
	if f.workers != 8 || f.sessionQueue != 32 || f.sessionQueueBytes != 65536 || f.queueBytes != 1<<20 || f.maxCalls != 16 {
		t.Errorf("flags and environment: %+v", f)
	}
	if err := f.check(kindBackend); err != nil {
		t.Fatal(err)
	}

	path := filepath.Join(t.TempDir(), "zcluster.yaml")
	if err := os.WriteFile(path, []byte("group: im\ninsecure: true\nsession-queue: 7\nmax-calls: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	f = &nodeFlags{apps: &appSet{{Name: "chat"}}}
	bindNodeFlags(fs, f, kindBackend)
	if err := applyConfigFile(fs, path); err != nil {
		t.Fatal(err)
	}
	if f.sessionQueue != 7 || f.maxCalls != 3 {
		t.Errorf("config file: session-queue %d, max-calls %d", f.sessionQueue, f.maxCalls)
	}

	f, _ = parseNode(t, kindBackend, []string{"--group", "im", "--insecure", "--session-queue", "0"}, nil)
	if err := f.check(kindBackend); err == nil || !strings.Contains(err.Error(), "--session-queue 0") {
		t.Errorf("--session-queue 0: %v", err)
	}
	// Gates have none of these flags.
	fs = pflag.NewFlagSet("gate", pflag.ContinueOnError)
	bindNodeFlags(fs, &nodeFlags{apps: &appSet{{Name: "chat"}}}, kindGate)
	if fs.Lookup("workers") != nil || fs.Lookup("max-calls") != nil {
		t.Error("gate has backend dispatch flags")
	}
}
