package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/aopguard/aopguard/internal/testtool"
)

// checkRun runs "aopguard check args..." in-process.
func checkRun(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = dispatch(append([]string{"check"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

// checkJSON is the part of check's --json report the tests read.
type checkJSON struct {
	Origin string `json:"origin"`
	Expect string `json:"expect"`
	Pass   bool   `json:"pass"`
	Probes []struct {
		Number   int    `json:"number"`
		Name     string `json:"name"`
		Host     string `json:"host"`
		Curl     string `json:"curl"`
		Outcome  string `json:"outcome"`
		Alert    string `json:"alert"`
		Status   int    `json:"status"`
		Detail   string `json:"detail"`
		Expected string `json:"expected"`
		Pass     bool   `json:"pass"`
		Note     string `json:"note"`
	} `json:"probes"`
}

func parseCheckJSON(t *testing.T, out string) checkJSON {
	t.Helper()
	var r checkJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("check --json output does not parse: %v\n%s", err, out)
	}
	return r
}

// failedProbes lists the numbers of the probes that failed.
func (r checkJSON) failedProbes() []int {
	var out []int
	for _, p := range r.Probes {
		if !p.Pass {
			out = append(out, p.Number)
		}
	}
	return out
}

// aopguardConfig writes a configuration for the test PKI: zone CA
// zone-ca.pem; app.example.com with hostExtra appended to its entry.
func aopguardConfig(t *testing.T, p *pki, upstreamURL, zoneMode, hostExtra string) string {
	t.Helper()
	return writeConfig(t, p.dir, `
upstream: `+upstreamURL+`
mode: `+zoneMode+`
zone_ca: zone-ca.pem
certificates:
  - cert: server.pem
    key: server.key
hosts:
  - name: app.example.com
`+hostExtra)
}

// TestCheckAgainstAopguard runs check against real aopguard processes,
// well and badly configured, in both expectations.
func TestCheckAgainstAopguard(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t)
	type run struct {
		expect string
		code   int
		failed []int // probe numbers that must fail
		alerts map[int]string
	}
	cases := []struct {
		name     string
		zoneMode string
		host     string
		runs     []run
	}{
		{
			name: "require, zone CA and a host with its own CA", zoneMode: "require", host: "    ca: host-ca.pem\n",
			runs: []run{
				{"require", 0, nil, map[int]string{2: "certificate_required", 3: "bad_certificate"}},
				{"log-only", 1, []int{1, 2, 3}, nil},
			},
		},
		{
			name: "log-only", zoneMode: "log-only", host: "    ca: host-ca.pem\n",
			runs: []run{
				{"log-only", 0, nil, nil},
				{"require", 1, []int{1, 2, 3}, nil},
			},
		},
		{
			name: "misconfigured: mode off", zoneMode: "off", host: "    ca: host-ca.pem\n",
			runs: []run{{"require", 1, []int{1, 2, 3}, nil}},
		},
		{
			name: "misconfigured: host enforced, zone (direct-to-IP) only logged", zoneMode: "log-only", host: "    ca: host-ca.pem\n    mode: require\n",
			runs: []run{{"require", 1, []int{1}, nil}},
		},
		{
			// The per-hostname certificate uploaded to Cloudflare is not
			// trusted for the host, which still takes the zone's CA.
			name: "misconfigured: host without its own CA", zoneMode: "require", host: "",
			runs: []run{{"require", 1, []int{5}, map[int]string{5: "bad_certificate"}}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := start(t, "--config", aopguardConfig(t, p, up.URL, tc.zoneMode, tc.host))
			for _, r := range tc.runs {
				code, out, errOut := checkRun(t, "--origin", g.listen, "--host", "app.example.com", "--ca", p.path("server-ca.pem"),
					"--client-cert", p.path("host-client.pem"), "--client-key", p.path("host-client.key"), "--expect", r.expect, "--json")
				rep := parseCheckJSON(t, out)
				if code != r.code || rep.Pass != (r.code == 0) || !slices.Equal(rep.failedProbes(), r.failed) {
					t.Errorf("--expect %s: exit %d, pass %v, failed probes %v; want exit %d, failed %v\n%s%s", r.expect, code, rep.Pass, rep.failedProbes(), r.code, r.failed, out, errOut)
					continue
				}
				if len(rep.Probes) != 5 {
					t.Errorf("--expect %s: %d probes, want 5", r.expect, len(rep.Probes))
				}
				for _, pr := range rep.Probes {
					if want, ok := r.alerts[pr.Number]; ok && (pr.Outcome != "tls_refused" || pr.Alert != want) {
						t.Errorf("--expect %s: probe %d: outcome %s alert %q, want tls_refused %q", r.expect, pr.Number, pr.Outcome, pr.Alert, want)
					}
					if pr.Name == "" || pr.Curl == "" || pr.Expected == "" || pr.Outcome == "" {
						t.Errorf("probe %d lacks a field: %+v", pr.Number, pr)
					}
				}
			}
		})
	}
}

// TestCheckTextAndBinary runs the binary as users do: the text report,
// the exit codes, and every printed curl command reproduces its probe.
func TestCheckTextAndBinary(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t)
	g := start(t, "--config", aopguardConfig(t, p, up.URL, "require", "    ca: host-ca.pem\n"))
	args := []string{"check", "--origin", g.listen, "--host", "app.example.com", "--ca", p.path("server-ca.pem"),
		"--client-cert", p.path("host-client.pem"), "--client-key", p.path("host-client.key")}

	cmd := exec.Command(binary, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("check: %v\n%s%s", err, out.String(), errb.String())
	}
	for _, want := range []string{
		"aopguard check: origin " + g.listen + ", expecting require",
		"TLS refused (certificate_required)",
		"TLS refused (bad_certificate)",
		"HTTP 421",
		"HTTP 200",
		"curl: curl -i -k https://" + g.listen + "/",
		"an HTTP 4xx answer counts as refused",
		"PASS: all 5 probes met the expectation (require).",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}

	err := exec.Command(binary, append(args, "--expect", "log-only")...).Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("--expect log-only against require: %v, want exit 1", err)
	}

	// Reproduce each probe with its curl command.
	code, js, _ := checkRun(t, append(args[1:], "--json")...)
	if code != 0 {
		t.Fatalf("check --json: exit %d\n%s", code, js)
	}
	tool(t, "curl")
	tool(t, "openssl")
	work := t.TempDir()
	for _, pr := range parseCheckJSON(t, js).Probes {
		sh := exec.Command("sh", "-c", strings.Replace(pr.Curl, "curl ", "curl --silent --show-error --max-time 10 ", 1))
		sh.Dir = work
		got, err := sh.CombinedOutput()
		exit := 0
		if ee, ok := err.(*exec.ExitError); ok {
			exit = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		switch pr.Outcome {
		case "tls_refused":
			// 35: handshake failed; 56: the alert came after the request (TLS 1.3).
			if (exit != 35 && exit != 56) || !strings.Contains(string(got), "alert") {
				t.Errorf("probe %d %s refused at TLS, but its curl exited %d:\n%s\n%s", pr.Number, pr.Name, exit, pr.Curl, got)
			}
		case "http":
			first, _, _ := strings.Cut(string(got), "\n")
			if exit != 0 || !strings.Contains(first, fmt.Sprintf(" %d", pr.Status)) {
				t.Errorf("probe %d %s got HTTP %d, but its curl exited %d:\n%s\n%s", pr.Number, pr.Name, pr.Status, exit, pr.Curl, got)
			}
		default:
			t.Errorf("probe %d: outcome %s", pr.Number, pr.Outcome)
		}
	}
}

func TestCheckBadInvocations(t *testing.T) {
	p := newPKI(t)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no origin", []string{"--host", "app.example.com"}, "--origin: the origin address is required"},
		{"no host", []string{"--origin", "127.0.0.1:1"}, "--host is required"},
		{"IP as host", []string{"--origin", "127.0.0.1:1", "--host", "127.0.0.1"}, "is an IP address"},
		{"URL as host", []string{"--origin", "127.0.0.1:1", "--host", "https://app.example.com"}, "not a URL"},
		{"bad expect", []string{"--origin", "127.0.0.1:1", "--host", "app.example.com", "--expect", "enforce"}, `--expect: "enforce" is not one of require, log-only`},
		{"cert without key", []string{"--origin", "127.0.0.1:1", "--host", "app.example.com", "--client-cert", p.path("host-client.pem")}, "--client-cert and --client-key go together"},
		{"key of another cert", []string{"--origin", "127.0.0.1:1", "--host", "app.example.com", "--client-cert", p.path("host-client.pem"), "--client-key", p.path("zone-client.key")}, "--client-cert:"},
		{"ca and insecure", []string{"--origin", "127.0.0.1:1", "--host", "app.example.com", "--insecure", "--ca", p.path("server-ca.pem")}, "pick one"},
		{"missing ca file", []string{"--origin", "127.0.0.1:1", "--host", "app.example.com", "--ca", p.path("absent.pem")}, "no such file"},
		{"zero timeout", []string{"--origin", "127.0.0.1:1", "--host", "app.example.com", "--timeout", "0s"}, "--timeout"},
		{"stray argument", []string{"--origin", "127.0.0.1:1", "--host", "app.example.com", "extra"}, `unexpected argument "extra"`},
		{"unknown flag", []string{"--bogus"}, "flag provided but not defined"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := checkRun(t, tc.args...)
			if code != 2 || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, errOut, tc.want)
			}
		})
	}
	if code, out, errOut := checkRun(t, "-h"); code != 0 || !strings.Contains(out, "1 direct-ip") {
		t.Errorf("check -h: exit %d:\n%s%s", code, out, errOut)
	}
}

// startNginx runs nginx in the foreground with a configuration like
// Cloudflare's example (ssl_client_certificate + ssl_verify_client) and
// returns its address.
func startNginx(t *testing.T, p *pki, verify string) string {
	t.Helper()
	return testtool.StartNginx(t, testtool.NginxSite{
		Cert: p.path("server.pem"), Key: p.path("server.key"), CA: p.path("host-ca.pem"),
		Verify: verify, Location: `            return 200 "hello from nginx\n";`,
	})
}

// TestCheckAgainstNginx: check tests deployments, not aopguard. nginx as
// in Cloudflare's guide refuses with HTTP 400 rather than a TLS alert,
// which counts as refused; with ssl_verify_client optional (the log-only
// step) the require check fails on the probes without a certificate.
func TestCheckAgainstNginx(t *testing.T) {
	p := newPKI(t)
	cases := []struct {
		verify string
		code   int
		failed []int
		status map[int]int
	}{
		{"on", 0, nil, map[int]int{1: 400, 2: 400, 3: 400, 4: 200, 5: 200}}, // 4: one server block; the made-up name is served as app.example.com, whose certificate it accepts
		{"optional", 1, []int{1, 2}, map[int]int{1: 200, 2: 200, 3: 400, 5: 200}},
	}
	for _, tc := range cases {
		t.Run("ssl_verify_client "+tc.verify, func(t *testing.T) {
			addr := startNginx(t, p, tc.verify)
			code, out, errOut := checkRun(t, "--origin", addr, "--host", "app.example.com", "--ca", p.path("server-ca.pem"),
				"--client-cert", p.path("host-client.pem"), "--client-key", p.path("host-client.key"), "--expect", "require", "--json")
			rep := parseCheckJSON(t, out)
			if code != tc.code || !slices.Equal(rep.failedProbes(), tc.failed) {
				t.Fatalf("exit %d, failed probes %v; want %d, %v\n%s%s", code, rep.failedProbes(), tc.code, tc.failed, out, errOut)
			}
			for _, pr := range rep.Probes {
				if want, ok := tc.status[pr.Number]; ok && (pr.Outcome != "http" || pr.Status != want) {
					t.Errorf("probe %d: %s %d, want HTTP %d", pr.Number, pr.Outcome, pr.Status, want)
				}
			}
			if tc.verify == "on" && !strings.Contains(rep.Probes[1].Detail, "No required SSL certificate was sent") {
				t.Errorf("probe 2 detail %q, want nginx's message", rep.Probes[1].Detail)
			}
		})
	}
}
