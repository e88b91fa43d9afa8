// Package testtool finds the external programs the tests drive for real
// (curl, openssl, nginx, promtool). Under CI (CI set), whose .ci/run
// installs them, a missing one fails the test. Elsewhere it skips the test,
// and says so where it is seen: besides the skip message (shown only with
// go test -v), each skip is appended to the file named by
// AOPGUARD_SKIPPED_TOOLS, which "make test" prints after the run.
package testtool

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// SkipFileEnv names the environment variable holding the file skips are
// appended to.
const SkipFileEnv = "AOPGUARD_SKIPPED_TOOLS"

// Path returns the path of the program name, looked up on PATH and then
// at the fallback paths (sbin folders are not on a non-root PATH). When it
// is not installed the test fails under CI and is skipped, visibly,
// elsewhere.
func Path(t testing.TB, name string, fallback ...string) string {
	t.Helper()
	if path, err := exec.LookPath(name); err == nil {
		return path
	}
	for _, f := range fallback {
		if _, err := os.Stat(f); err == nil {
			return f
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed; .ci/run must install it", name)
	}
	if file := os.Getenv(SkipFileEnv); file != "" {
		if f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
			fmt.Fprintf(f, "%s: %s not installed\n", t.Name(), name)
			f.Close()
		}
	}
	t.Skipf("%s not installed (CI installs it; see .ci/run)", name)
	return ""
}
