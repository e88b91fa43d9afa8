package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

// TestHelpEverywhere asks every command for help both ways: the help goes
// to stdout (so "aopguard run --help | less" works) with exit 0, and the
// synopsis and the list of flags agree: every flag listed is in the
// synopsis, every flag in the synopsis exists, and a flag's placeholder is
// the same in both.
func TestHelpEverywhere(t *testing.T) {
	commands := [][]string{
		{"run"}, {"status"}, {"check"},
		{"certs"}, {"certs", "ca"}, {"certs", "client"}, {"certs", "server"}, {"certs", "payload"}, {"certs", "inspect"},
		{"certs", "ticket-keys"},
		{"cloudflare"}, {"cloudflare", "audit"}, {"cloudflare", "apply"}, {"cloudflare", "rotate"},
		{"version"},
	}
	synopsisFlag := regexp.MustCompile(`(?:^|[\s\[|(])--?([a-z][a-z0-9-]*)(?: ([A-Z][A-Z_]*)\b)?`)
	listedFlag := regexp.MustCompile(`(?m)^  --([a-z][a-z0-9-]*)(?: (\S+))?$`)
	for _, cmd := range commands {
		name := "aopguard " + strings.Join(cmd, " ")
		var outputs []string
		for _, args := range [][]string{append(cmd[:len(cmd):len(cmd)], "-h"), append(cmd[:len(cmd):len(cmd)], "--help"), append([]string{"help"}, cmd...)} {
			var out, errb bytes.Buffer
			code := dispatch(args, &out, &errb)
			if code != 0 || errb.Len() != 0 || !strings.HasPrefix(out.String(), "Usage: "+name) {
				t.Errorf("%q: exit %d, stderr %q, stdout starts %q; want 0, nothing, \"Usage: %s\"", args, code, errb.String(), firstLine(out.String()), name)
			}
			outputs = append(outputs, out.String())
		}
		if outputs[0] != outputs[1] || outputs[0] != outputs[2] {
			t.Errorf("%s: -h, --help and help give different texts", name)
		}
		help := outputs[0]
		synopsis, _, _ := strings.Cut(help, "\n\n")
		inSynopsis := map[string]string{}
		for _, m := range synopsisFlag.FindAllStringSubmatch(synopsis, -1) {
			inSynopsis[m[1]] = m[2]
		}
		listed := map[string]bool{}
		if _, flags, ok := strings.Cut(help, "\nFlags:\n"); ok {
			for _, m := range listedFlag.FindAllStringSubmatch(flags, -1) {
				listed[m[1]] = true
				ph, ok := inSynopsis[m[1]]
				switch {
				case !ok:
					t.Errorf("%s: --%s is listed but not in the synopsis:\n%s", name, m[1], synopsis)
				case ph != "" && ph != m[2]:
					t.Errorf("%s: --%s is --%s %s in the synopsis but --%s %s in the list", name, m[1], m[1], ph, m[1], m[2])
				}
			}
		}
		for f := range inSynopsis {
			if !listed[f] && len(cmd) > 1 || !listed[f] && cmd[0] != "certs" && cmd[0] != "cloudflare" {
				t.Errorf("%s: the synopsis names --%s, which is not a flag", name, f)
			}
		}
	}
}

// TestRunHelpNamesAdminEndpoints: "run --help" is where an operator looks
// for what the admin listener serves.
func TestRunHelpNamesAdminEndpoints(t *testing.T) {
	var out, errb bytes.Buffer
	if code := dispatch([]string{"run", "--help"}, &out, &errb); code != 0 {
		t.Fatalf("run --help: exit %d", code)
	}
	for _, want := range []string{"GET /metrics", "GET /healthz", "GET /readyz", "GET /status", "GET /   ", "/debug/pprof/", "--admin-pprof"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("run --help does not name %q:\n%s", want, out.String())
		}
	}
}

// TestBadFlagGoesToStderr: a mistake is reported on stderr with exit 2 and
// a pointer to -h, and the help text does not drown it on stdout.
func TestBadFlagGoesToStderr(t *testing.T) {
	for _, args := range [][]string{
		{"run", "--bogus"}, {"status", "--bogus"}, {"check", "--bogus"},
		{"certs", "ca", "--bogus"}, {"certs", "server", "--bogus"}, {"certs", "inspect", "--bogus"},
		{"certs", "ticket-keys", "--bogus"}, {"cloudflare", "audit", "--bogus"}, {"cloudflare", "rotate", "--bogus"},
	} {
		var out, errb bytes.Buffer
		code := dispatch(args, &out, &errb)
		want := "flag provided but not defined: -bogus"
		if code != 2 || out.Len() != 0 || !strings.Contains(errb.String(), want) || !strings.Contains(errb.String(), " -h\" lists the flags") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2, nothing, %q and a pointer to -h", args, code, out.String(), errb.String(), want)
		}
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
