package examples_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// readmeFiles returns the Go files of the README: every ```go block that
// starts with "// file: <path>" (all of those of the section "Write your
// own server" must).
func readmeFiles(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i := strings.Index(text, "\n## Write your own server\n")
	if i < 0 {
		t.Fatal(`README.md has no section "## Write your own server"`)
	}
	own := text[i+1:]
	if j := strings.Index(own[3:], "\n## "); j >= 0 {
		own = own[:j+3]
	}
	section := text
	files := map[string]string{}
	for {
		start := strings.Index(section, "```go\n")
		if start < 0 {
			break
		}
		section = section[start+len("```go\n"):]
		end := strings.Index(section, "```\n")
		if end < 0 {
			t.Fatal("unterminated ```go block")
		}
		block := section[:end]
		section = section[end:]
		first, _, _ := strings.Cut(block, "\n")
		name, ok := strings.CutPrefix(first, "// file: ")
		if !ok {
			if strings.Contains(own, block) {
				t.Fatalf("a ```go block of the section does not start with // file: <path>: %q", first)
			}
			continue // a fragment elsewhere in the README
		}
		files[name] = block
	}
	return files
}

// TestReadmeOwnServerBuilds: the Go code of "Write your own server"
// compiles and vets, and its test passes (a handler answering a client on
// each of two gates).
func TestReadmeOwnServerBuilds(t *testing.T) {
	files := readmeFiles(t)
	for _, want := range []string{"main.go", "main_test.go", "client/main.go", "handlers/handlers.go"} {
		if _, ok := files[want]; !ok {
			t.Fatalf("README section lacks %s (has %v)", want, files)
		}
	}
	// Inside this module, so that it builds against this tree.
	dir, err := os.MkdirTemp("..", "zc-readme-build-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	for name, src := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pkg := "./" + filepath.Base(dir)
	for _, args := range [][]string{
		{"vet", pkg + "/..."},
		{"test", "-count=1", pkg},
	} {
		cmd := exec.Command("go", args...)
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
