// Package examples_test checks what every example promises: it is built
// only on zcluster's public API, as a user's own server would be.
package examples_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestExamplesUsePublicAPIOnly: no file under examples/ imports an
// internal/ package (the Go toolchain would refuse that to a user's module).
func TestExamplesUsePublicAPIOnly(t *testing.T) {
	var files []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		files = append(files, path)
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if strings.Contains(p, "/internal/") || strings.HasSuffix(p, "/internal") {
				t.Errorf("%s imports %s: examples must use only the public API", path, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"chat/chat.go", "rooms/rooms.go", "rooms/rooms_test.go", "rooms/cmd/rooms/main.go"} {
		found := false
		for _, f := range files {
			found = found || filepath.ToSlash(f) == want
		}
		if !found {
			t.Errorf("%s not checked (checked %v)", want, files)
		}
	}
}
