package zinxquiet_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// buildUserBin builds testdata/userbin, a stand-in for a user's own binary
// that links zcluster's gate and backend packages and zinx itself.
func buildUserBin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "userbin")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/userbin").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// envWithout is the test's environment minus the variables named.
func envWithout(names ...string) []string {
	var env []string
next:
	for _, kv := range os.Environ() {
		for _, n := range names {
			if strings.HasPrefix(kv, n+"=") {
				continue next
			}
		}
		env = append(env, kv)
	}
	return env
}

// runIn runs bin in dir with env and returns its combined output.
func runIn(t *testing.T, bin, dir string, env []string) string {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", bin, err, out)
	}
	return string(out)
}

// TestUserBinaryFromTempDir: a binary built on zcluster, run from a
// directory with no conf/zinx.json and no ZINX_CONFIG_FILE_PATH, prints no
// zinx complaint, keeps zinx's defaults and leaves no variable behind for
// its children.
func TestUserBinaryFromTempDir(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("zinxquiet does nothing on Windows")
	}
	bin := buildUserBin(t)
	out := runIn(t, bin, t.TempDir(), envWithout("ZINX_CONFIG_FILE_PATH"))
	if strings.Contains(out, "zinx.json") || strings.Contains(out, "is not exist") {
		t.Fatalf("zinx complained:\n%s", out)
	}
	if want := `ZINX_CONFIG_FILE_PATH="" MaxPacketSize=4096`; !strings.Contains(out, want) {
		t.Fatalf("output %q, want %q (no variable left, zinx defaults)", out, want)
	}
}

// TestUserConfigStillRead: a zinx configuration the user gives, by the
// variable or as conf/zinx.json in the working directory, is read as zinx
// documents it, and the variable is left as the user set it. A variable
// naming a missing file (a stale export) gets no complaint either.
func TestUserConfigStillRead(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("zinxquiet does nothing on Windows")
	}
	bin := buildUserBin(t)

	file := filepath.Join(t.TempDir(), "my-zinx.json")
	if err := os.WriteFile(file, []byte(`{"MaxPacketSize":1234}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out := runIn(t, bin, t.TempDir(), append(envWithout("ZINX_CONFIG_FILE_PATH"), "ZINX_CONFIG_FILE_PATH="+file))
	if want := "ZINX_CONFIG_FILE_PATH=\"" + file + "\" MaxPacketSize=1234"; !strings.Contains(out, want) {
		t.Fatalf("with the variable set: output %q, want %q", out, want)
	}

	missing := filepath.Join(t.TempDir(), "conf", "zinx.json")
	out = runIn(t, bin, t.TempDir(), append(envWithout("ZINX_CONFIG_FILE_PATH"), "ZINX_CONFIG_FILE_PATH="+missing))
	if strings.Contains(out, "is not exist") {
		t.Fatalf("with the variable naming a missing file, zinx complained:\n%s", out)
	}
	if want := "ZINX_CONFIG_FILE_PATH=\"" + missing + "\" MaxPacketSize=4096"; !strings.Contains(out, want) {
		t.Fatalf("with the variable naming a missing file: output %q, want %q", out, want)
	}

	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "conf"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "conf", "zinx.json"), []byte(`{"MaxPacketSize":777}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out = runIn(t, bin, dir, envWithout("ZINX_CONFIG_FILE_PATH"))
	if want := `ZINX_CONFIG_FILE_PATH="" MaxPacketSize=777`; !strings.Contains(out, want) {
		t.Fatalf("with conf/zinx.json: output %q, want %q", out, want)
	}
}
