package repofile_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polyglot-shop/shop/go_service/internal/repofile"
)

func TestResolveFindsTheFileInTheNearestParent(t *testing.T) {
	root := t.TempDir()
	want := filepath.Join(root, "data", "x.json")
	if err := os.MkdirAll(filepath.Dir(want), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(want, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	deep := filepath.Join(root, "a", "b")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{root, deep} {
		got, err := repofile.Resolve("", "data/x.json", dir, "SHOP_X")
		if err != nil || got != want {
			t.Errorf("Resolve from %s = %q, %v; want %q", dir, got, err, want)
		}
	}
}

func TestResolveKeepsAGivenPathAndNamesTheVariableWhenNothingIsFound(t *testing.T) {
	if got, err := repofile.Resolve("/given/path", "data/x.json", "", "SHOP_X"); err != nil || got != "/given/path" {
		t.Errorf("Resolve with a path = %q, %v", got, err)
	}
	_, err := repofile.Resolve("", "data/definitely-not-here.json", t.TempDir(), "SHOP_X")
	if err == nil || !strings.Contains(err.Error(), "SHOP_X") || !strings.Contains(err.Error(), "data/definitely-not-here.json") {
		t.Errorf("Resolve of a missing file = %v, want an error naming the file and SHOP_X", err)
	}
}
