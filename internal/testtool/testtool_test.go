package testtool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMissingToolSkipsVisibly: outside CI a missing program skips the
// test and leaves a line in the skip file; an installed one is found.
func TestMissingToolSkipsVisibly(t *testing.T) {
	file := filepath.Join(t.TempDir(), "skips")
	t.Setenv(SkipFileEnv, file)
	t.Setenv("CI", "")
	t.Run("missing", func(t *testing.T) {
		Path(t, "aopguard-no-such-tool")
		t.Error("a missing tool did not skip")
	})
	data, err := os.ReadFile(file)
	if err != nil || !strings.Contains(string(data), "TestMissingToolSkipsVisibly/missing: aopguard-no-such-tool not installed") {
		t.Errorf("skip file: %q, %v", data, err)
	}
	if p := Path(t, "sh"); p == "" {
		t.Error("sh not found")
	}
}
