package main

import (
	"net"
	"os/exec"
	"strings"
	"testing"
)

// curl runs the real curl binary against aopguard and returns its exit code,
// the response headers and body. sni selects the name curl connects with
// (--resolve pins it to aopguard's address); "" dials the IP directly.
// extra are more curl options ("--http1.1").
func curl(t *testing.T, p *pki, addr, sni, certName string, extra ...string) (int, string) {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	url := "https://" + addr + "/"
	args := append([]string{"--silent", "--show-error", "--max-time", "10", "--include", "--cacert", p.path("server-ca.pem")}, extra...)
	if sni != "" {
		args = append(args, "--resolve", sni+":"+port+":127.0.0.1")
		url = "https://" + sni + ":" + port + "/"
	}
	if certName != "" {
		args = append(args, "--cert", p.path(certName+".pem"), "--key", p.path(certName+".key"))
	}
	return runCmd(t, exec.Command(tool(t, "curl"), append(args, url)...))
}

// TestCurlStagedRollout walks Cloudflare's per-hostname AOP steps with
// aopguard in place of nginx: log-only first (nothing refused, verdict
// reported), then require, then the check users run by hand — curl straight
// to the origin IP fails, and succeeds with the right client certificate.
// Every step runs over HTTP/2 (curl's default) and HTTP/1.1 (what
// Cloudflare uses towards origins by default), which aopguard serves with
// different servers.
func TestCurlStagedRollout(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t)
	config := func(mode string) {
		writeConfig(t, p.dir, `
upstream: `+up.URL+`
mode: `+mode+`
zone_ca: zone-ca.pem
certificates:
  - cert: server.pem
    key: server.key
hosts:
  - name: app.example.com
    ca: host-ca.pem
`)
	}
	config("log-only")
	g := start(t, "--config", p.path("aopguard.yaml"))

	logOnly := []struct {
		name, sni, cert, verify string
	}{
		{"direct to IP, no cert", "", "", "NONE"},
		{"direct to IP, zone cert", "", "zone-client", "SUCCESS"},
		{"direct to IP, rogue cert", "", "rogue-client", "FAILED:untrusted"},
		{"host, host cert", "app.example.com", "host-client", "SUCCESS"},
		{"host, zone cert (AOP for hostname not enabled yet)", "app.example.com", "zone-client", "FAILED:zone_cert_on_host"},
		{"host, no cert", "app.example.com", "", "NONE"},
	}
	protocols := []struct{ flag, status string }{{"--http2", "HTTP/2 200"}, {"--http1.1", "HTTP/1.1 200"}}
	for _, proto := range protocols {
		for _, tc := range logOnly {
			code, out := curl(t, p, g.listen, tc.sni, tc.cert, proto.flag)
			if code != 0 || !strings.Contains(out, proto.status) {
				t.Fatalf("log-only %s, %s: curl exit %d:\n%s", proto.flag, tc.name, code, out)
			}
			if !strings.Contains(strings.ToLower(out), "x-upstream-saw-client-verify: "+strings.ToLower(tc.verify)) {
				t.Errorf("log-only %s, %s: upstream did not see X-Client-Verify %s:\n%s", proto.flag, tc.name, tc.verify, out)
			}
		}
	}
	if v := g.metric(`aopguard_client_cert_verifications_total{action="would_reject",host="app.example.com",mode="log-only",reason="zone_cert_on_host",result="failed",source="other"}`); v != "2" {
		t.Errorf("would_reject count for app.example.com = %q, want 2", v)
	}

	config("require")
	if !g.reload() {
		t.Fatal("reload to require failed")
	}
	seen := up.count()
	enforced := []struct {
		name, sni, cert string
		ok              bool
	}{
		{"direct to IP, no cert", "", "", false},
		{"direct to IP, rogue cert", "", "rogue-client", false},
		{"direct to IP, zone cert", "", "zone-client", true},
		{"host, no cert", "app.example.com", "", false},
		{"host, zone cert", "app.example.com", "zone-client", false},
		{"host, host cert", "app.example.com", "host-client", true},
	}
	for _, proto := range protocols {
		for _, tc := range enforced {
			code, out := curl(t, p, g.listen, tc.sni, tc.cert, proto.flag)
			if tc.ok {
				if code != 0 || !strings.Contains(out, proto.status) || !strings.Contains(strings.ToLower(out), "x-upstream-saw-client-verify: success") {
					t.Errorf("require %s, %s: want 200 SUCCESS, curl exit %d:\n%s", proto.flag, tc.name, code, out)
				}
				continue
			}
			// 35: TLS handshake failed; 56: the alert arrived after curl
			// sent its request (TLS 1.3 reports client-certificate
			// failures late).
			if code != 35 && code != 56 {
				t.Errorf("require %s, %s: want a TLS failure (curl exit 35 or 56), got exit %d:\n%s", proto.flag, tc.name, code, out)
			}
			if !strings.Contains(out, "alert") {
				t.Errorf("require %s, %s: curl did not report a TLS alert:\n%s", proto.flag, tc.name, out)
			}
		}
	}
	if got := up.count() - seen; got != 4 {
		t.Errorf("upstream saw %d requests under require, want 4 (the two with the right certificates, over each protocol)", got)
	}
}
