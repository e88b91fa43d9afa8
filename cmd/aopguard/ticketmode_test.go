package main

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/aopguard/aopguard/config"
)

// TestTicketKeysFileMode: whoever reads the session ticket key file can
// mint tickets for every policy, so a file other users may read or write
// is refused at load and reload (naming file, key and line, and keeping
// the running configuration) and by --validate (exit 2); a group-readable
// one (a Kubernetes Secret's fsGroup) loads with a warning.
func TestTicketKeysFileMode(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("file modes are not checked on Windows")
	}
	p := newPKI(t)
	keys := p.path("tickets.keys")
	if code, out, errOut := certsRun(t, "", "ticket-keys", "--out", keys); code != 0 {
		t.Fatalf("certs ticket-keys: %d %s %s", code, out, errOut)
	}
	cfgPath := writeConfig(t, p.dir, "upstream: http://127.0.0.1:1\nzone_ca: zone-ca.pem\nsession_ticket_keys: tickets.keys\n")
	var logs syncBuffer
	a, cfg := appFor(t, cfgPath, &logs) // keys at mode 0600
	for _, tc := range []struct {
		mode          os.FileMode
		refused, warn bool
	}{
		{0o600, false, false},
		{0o400, false, false},
		{0o440, false, true},
		{0o640, false, true},
		{0o660, false, true},
		{0o644, true, false},
		{0o604, true, false},
		{0o602, true, false},
		{0o601, true, false},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			if err := os.Chmod(keys, tc.mode); err != nil {
				t.Fatal(err)
			}
			running := a.set()
			before := strings.Count(logs.String(), "readable by its group")
			err := a.apply(cfg)
			warned := strings.Count(logs.String(), "readable by its group") > before
			if tc.refused {
				var ce *config.Error
				if !errors.As(err, &ce) || ce.Key != "session_ticket_keys" || ce.Line != 3 || !strings.Contains(err.Error(), keys) {
					t.Fatalf("apply with mode %04o: %v, want an error naming file, key session_ticket_keys, line 3 and %s", tc.mode, err, keys)
				}
				if a.set() != running {
					t.Fatal("a refused key file replaced the running configuration")
				}
				return
			}
			if err != nil {
				t.Fatalf("apply with mode %04o: %v", tc.mode, err)
			}
			if warned != tc.warn {
				t.Fatalf("mode %04o: warned %v, want %v; logs:\n%s", tc.mode, warned, tc.warn, logs.String())
			}
		})
	}

	if err := os.Chmod(keys, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := runCmd(t, exec.Command(binary, "run", "--validate", "--config", cfgPath))
	if code != 2 || !strings.Contains(out, "session_ticket_keys") || !strings.Contains(out, "open to other users") {
		t.Errorf("--validate with a world-readable key file: exit %d, want 2\n%s", code, out)
	}
}
