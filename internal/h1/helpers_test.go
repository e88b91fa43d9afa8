package h1

import (
	"testing"
	"time"
)

// guard bounds every wait in these tests so that a broken engine fails a
// test instead of hanging it. It is never asserted against.
const guard = 10 * time.Second

// waitFor polls cond until it holds, failing the test after guard.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
