// Package repofile finds the repository files a service reads at start-up
// (the seed, the shared SQL schema, the descriptor set) when no path is
// configured: a path relative to the repository root is looked for in the
// working directory and then in each of its parents, so a binary started from
// the root or from go_service/ finds the same file.
package repofile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Resolve returns path when it is set, and otherwise rel searched for in dir
// and then in each of dir's parents. An empty dir means the working
// directory. env names the variable that sets the path, for the error that
// says what was looked for.
func Resolve(path, rel, dir, env string) (string, error) {
	if path != "" {
		return path, nil
	}
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return "", fmt.Errorf("find %s: %w", rel, err)
		}
		dir = wd
	}
	for d := dir; ; {
		candidate := filepath.Join(d, rel)
		if _, err := os.Stat(candidate); err == nil {
			return candidate, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no %s in %s or any parent directory; set %s", rel, dir, env)
		}
		d = parent
	}
}
