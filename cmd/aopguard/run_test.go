package main

import (
	"bytes"
	"crypto/tls"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aopguard/aopguard/certs"
	"github.com/aopguard/aopguard/internal/testpki"
)

func TestStartupErrorsExit2AndNameFileAndKey(t *testing.T) {
	p := newPKI(t)
	p.write(t, "garbage.pem", []byte("this is not PEM\n"))
	other := testpki.Server(t, p.serverCA, "other")
	p.write(t, "other.key", other.KeyPEM())
	cases := []struct {
		name   string
		config string   // written to aopguard.yaml and passed with --config when not empty
		args   []string // extra flags
		want   []string // substrings of stderr
	}{
		{"unknown key", "upstream: http://127.0.0.1:1\nbogus: 1\n", nil, []string{"aopguard.yaml", "bogus (line 2): unknown key"}},
		{"unknown host key", "upstream: http://127.0.0.1:1\nhosts:\n  - name: a.example.com\n  - name: b.example.com\n    cert: x\n", nil, []string{"hosts[1].cert", "unknown key"}},
		{"bad mode", "upstream: http://127.0.0.1:1\nmode: enforce\n", nil, []string{"aopguard.yaml", "mode", `"enforce" is not one of off, log-only, require`}},
		{"not yaml", "upstream: [unclosed\n", nil, []string{"aopguard.yaml", "not valid YAML"}},
		{"missing upstream", "mode: require\n", nil, []string{"aopguard.yaml", "upstream", "required"}},
		{"host ca missing", "upstream: http://127.0.0.1:1\nhosts:\n  - name: a.example.com\n  - name: b.example.com\n    ca: nope.pem\n", nil, []string{"aopguard.yaml", "hosts[1].ca", "nope.pem", "no such file"}},
		{"host ca garbage", "upstream: http://127.0.0.1:1\nhosts:\n  - name: a.example.com\n    ca: garbage.pem\n", nil, []string{"hosts[0].ca", "garbage.pem: no certificate found"}},
		{"zone ca garbage", "upstream: http://127.0.0.1:1\nzone_ca: garbage.pem\n", nil, []string{"zone_ca", "garbage.pem: no certificate found"}},
		{"cert key mismatch", "upstream: http://127.0.0.1:1\ncertificates:\n  - cert: server.pem\n    key: other.key\n", nil, []string{"certificates[0]", "server.pem", "other.key"}},
		{"flag bad mode", "", []string{"--upstream", "http://127.0.0.1:1", "--mode", "enforce"}, []string{"--mode", "enforce"}},
		{"flag cert without key", "", []string{"--upstream", "http://127.0.0.1:1", "--cert", "server.pem"}, []string{"--cert and --key go together"}},
		{"flag zone ca garbage", "", []string{"--upstream", "http://127.0.0.1:1", "--zone-ca", p.path("garbage.pem")}, []string{"zone_ca", "garbage.pem: no certificate found"}},
		{"config file missing", "", []string{"--config", p.path("absent.yaml")}, []string{"absent.yaml", "no such file"}},
		{"bad upstream flag", "", []string{"--upstream", "ftp://x"}, []string{"--upstream", "scheme must be http, https, h2c, h2 or unix"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"run", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"}
			if tc.config != "" {
				args = append(args, "--config", writeConfig(t, p.dir, tc.config))
			}
			cmd := exec.Command(binary, append(args, tc.args...)...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 2 {
				t.Fatalf("exit: %v, want code 2; stderr:\n%s", err, stderr.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
		})
	}
}

func TestUnknownCommandAndVersion(t *testing.T) {
	out, err := exec.Command(binary, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "aopguard ") {
		t.Fatalf("version: %q, %v", out, err)
	}
	err = exec.Command(binary, "frobnicate").Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Fatalf("unknown command: %v, want exit 2", err)
	}
}

// The first-run command from the README: embedded Cloudflare CA, require,
// self-signed server certificate.
func TestEmbeddedDefaults(t *testing.T) {
	up := newUpstream(t)
	p := newPKI(t)
	g := start(t, "--upstream", up.URL)
	if g.find("no server certificate configured: serving a self-signed one generated at start; configure certificates (or --cert/--key) for production") == nil {
		t.Error("no warning about the self-signed certificate")
	}
	insecure := &tls.Config{InsecureSkipVerify: true}
	if _, _, err := get(t, g.listen, insecure, "", "/"); err == nil {
		t.Fatal("request without a client certificate succeeded under the default require mode")
	}
	withRogue := p.clientTLS("", p.rogueLf)
	withRogue.InsecureSkipVerify = true
	if _, _, err := get(t, g.listen, withRogue, "", "/"); err == nil {
		t.Fatal("a certificate not issued by Cloudflare's origin-pull CA was accepted")
	}
	if up.count() != 0 {
		t.Fatalf("upstream saw %d requests", up.count())
	}
	zoneCA := `aopguard_certificate_expiry_timestamp_seconds{host="_zone",role="zone_ca",subject="origin-pull.cloudflare.net"}`
	if v := g.metric(zoneCA); v != "1.8882468e+09" {
		t.Errorf("%s = %q, want the embedded CA's NotAfter 1888246800", zoneCA, v)
	}
	if v := g.metric(`aopguard_client_cert_verifications_total{action="reject",host="_zone",mode="require",reason="missing",result="none",source="other"}`); v != "1" {
		t.Errorf("missing-certificate rejects = %q, want 1", v)
	}
	if v := g.metric(`aopguard_client_cert_verifications_total{action="reject",host="_zone",mode="require",reason="untrusted",result="failed",source="other"}`); v != "1" {
		t.Errorf("untrusted-certificate rejects = %q, want 1", v)
	}
	if CloudflareNotAfter := certs.CloudflareOriginPullCA().NotAfter.Unix(); CloudflareNotAfter != 1888246800 {
		t.Fatalf("embedded CA NotAfter = %d", CloudflareNotAfter)
	}
	resp, err := http.Get("http://" + g.admin + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
}

func TestZoneAndHostPolicies(t *testing.T) {
	p := newPKI(t)
	zoneUp, hostUp := newUpstream(t), newUpstream(t)
	cfg := writeConfig(t, p.dir, `
upstream: `+zoneUp.URL+`
mode: require
zone_ca: zone-ca.pem
certificates:
  - cert: server.pem
    key: server.key
hosts:
  - name: app.example.com
    ca: host-ca.pem
    upstream: `+hostUp.URL+`
  - name: "*.example.com"
`)
	g := start(t, "--config", cfg)
	cases := []struct {
		name     string
		sni      string
		leaf     *testpki.Cert
		wantOK   bool
		wantUp   *upstream
		wantHost string
	}{
		{"direct to IP, zone cert", "", p.zoneLeaf, true, zoneUp, ""},
		{"direct to IP, no cert", "", nil, false, nil, ""},
		{"direct to IP, host cert", "", p.hostLeaf, false, nil, ""},
		{"host, host cert", "app.example.com", p.hostLeaf, true, hostUp, "app.example.com"},
		{"host policy beats zone: zone cert refused", "app.example.com", p.zoneLeaf, false, nil, ""},
		{"host name is case-insensitive", "APP.Example.COM", p.hostLeaf, true, hostUp, "APP.Example.COM"},
		{"wildcard inherits zone CA", "other.example.com", p.zoneLeaf, true, zoneUp, "other.example.com"},
		{"wildcard refuses host cert", "other.example.com", p.hostLeaf, false, nil, ""},
		{"unknown name falls to zone", "localhost", p.zoneLeaf, true, zoneUp, "localhost"},
		{"rogue CA", "app.example.com", p.rogueLf, false, nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := map[*upstream]int{zoneUp: zoneUp.count(), hostUp: hostUp.count()}
			host := tc.wantHost
			if host == "" {
				host = tc.sni
			}
			resp, _, err := get(t, g.listen, p.clientTLS(tc.sni, tc.leaf), host, "/")
			if !tc.wantOK {
				if err == nil {
					t.Fatalf("admitted with status %d", resp.StatusCode)
				}
				for u, n := range before {
					if u.count() != n {
						t.Fatal("an upstream saw a refused request")
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 || resp.Header.Get("X-Upstream-Saw-Client-Verify") != "SUCCESS" {
				t.Fatalf("status %d, verify %q", resp.StatusCode, resp.Header.Get("X-Upstream-Saw-Client-Verify"))
			}
			if got := resp.Header.Get("X-Upstream-Saw-Fingerprint"); got != certs.Fingerprint(tc.leaf.Cert.Raw) {
				t.Errorf("fingerprint %q", got)
			}
			if tc.wantUp.count() != before[tc.wantUp]+1 {
				t.Error("request did not reach the policy's upstream")
			}
		})
	}
}

func TestReloadGoodAndBad(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t)
	newHostCA := testpki.CA(t, "app AOP CA 2026")
	newHostLeaf := testpki.Client(t, newHostCA, "app.example.com 2026")
	cfgText := `
upstream: ` + up.URL + `
mode: require
zone_ca: zone-ca.pem
certificates:
  - cert: server.pem
    key: server.key
hosts:
  - name: app.example.com
    ca: host-ca.pem
`
	cfg := writeConfig(t, p.dir, cfgText)
	g := start(t, "--config", cfg)
	app := func(leaf *testpki.Cert) bool {
		resp, _, err := get(t, g.listen, p.clientTLS("app.example.com", leaf), "app.example.com", "/")
		return err == nil && resp.StatusCode == 200
	}

	// A keep-alive connection opened before every reload below.
	keep := &http.Client{Transport: &http.Transport{TLSClientConfig: p.clientTLS("app.example.com", p.hostLeaf)}}
	defer keep.CloseIdleConnections()
	keepGet := func() int {
		req, _ := http.NewRequest("GET", "https://"+g.listen+"/", nil)
		req.Host = "app.example.com"
		resp, err := keep.Do(req)
		if err != nil {
			t.Fatalf("keep-alive request: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if keepGet() != 200 {
		t.Fatal("keep-alive request refused")
	}

	// Bad reloads: each keeps the running configuration.
	bad := []struct {
		name  string
		apply func()
		want  string
	}{
		{"garbage CA bundle", func() { p.write(t, "host-ca.pem", []byte("-----BEGIN CERTIFICATE-----\nnot base64\n")) }, "hosts[0].ca"},
		{"half-written CA bundle", func() { pem := p.hostCA.CertPEM(); p.write(t, "host-ca.pem", pem[:len(pem)/2]) }, "hosts[0].ca"},
		{"bad yaml", func() { writeConfig(t, p.dir, cfgText+"  - name: [\n") }, "not valid YAML"},
		{"cert/key mismatch", func() { p.write(t, "server.key", newHostLeaf.KeyPEM()) }, "certificates[0]"},
	}
	for i, tc := range bad {
		tc.apply()
		if g.reload() {
			t.Fatalf("%s: reload succeeded", tc.name)
		}
		last := g.all("reload failed; still serving the previous configuration")
		if errText, _ := last[len(last)-1]["error"].(string); !strings.Contains(errText, tc.want) {
			t.Errorf("%s: logged error %q lacks %q", tc.name, errText, tc.want)
		}
		if !app(p.hostLeaf) {
			t.Fatalf("%s: running configuration lost", tc.name)
		}
		if v := g.metric(`aopguard_config_reloads_total{result="failure"}`); v != strconv.Itoa(i+1) {
			t.Errorf("%s: failure count %q", tc.name, v)
		}
		// Restore.
		p.write(t, "host-ca.pem", p.hostCA.CertPEM())
		p.write(t, "server.key", p.server.KeyPEM())
		writeConfig(t, p.dir, cfgText)
	}

	// Rotation: old -> old+new -> new.
	p.write(t, "host-ca.pem", testpki.Bundle(p.hostCA, newHostCA))
	if !g.reload() {
		t.Fatal("reload to old+new bundle failed")
	}
	if !app(p.hostLeaf) || !app(newHostLeaf) {
		t.Fatal("old+new bundle does not accept both leaves")
	}
	if keepGet() != 200 {
		t.Fatal("keep-alive connection disturbed by a reload that still trusts it")
	}
	p.write(t, "host-ca.pem", newHostCA.CertPEM())
	if !g.reload() {
		t.Fatal("reload to new bundle failed")
	}
	if app(p.hostLeaf) {
		t.Fatal("old leaf still admitted after its CA was removed")
	}
	if !app(newHostLeaf) {
		t.Fatal("new leaf refused")
	}
	// A connection admitted under the removed CA is re-judged under the
	// new policy for its next request.
	if code := keepGet(); code != http.StatusMisdirectedRequest {
		t.Fatalf("keep-alive request with a no-longer-trusted certificate: %d, want 421", code)
	}
	if v := g.metric(`aopguard_config_reloads_total{result="success"}`); v != "3" {
		t.Errorf("success count %q, want 3 (start + 2 reloads)", v)
	}
}

func TestDrainOnSIGTERM(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t)
	up.hold = make(chan struct{})
	g := start(t, "--upstream", up.URL, "--mode", "log-only", "--cert", p.path("server.pem"), "--key", p.path("server.key"))
	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		resp, body, err := get(t, g.listen, p.clientTLS("localhost", nil), "localhost", "/slow")
		if err != nil {
			done <- result{err: err}
			return
		}
		done <- result{status: resp.StatusCode, body: body}
	}()
	for up.count() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	g.signal(syscall.SIGTERM)
	g.waitLog("shutting down: draining in-flight requests", 1)
	// New connections are refused while the in-flight request drains.
	if _, _, err := get(t, g.listen, p.clientTLS("localhost", nil), "localhost", "/"); err == nil {
		t.Error("new request accepted during shutdown")
	}
	close(up.hold)
	r := <-done
	if r.err != nil || r.status != 200 || !strings.Contains(r.body, "hello from upstream") {
		t.Fatalf("in-flight request: %+v", r)
	}
	if code := g.wait(); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
}

func TestAccessLogLine(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t)
	g := start(t, "--upstream", up.URL, "--mode", "log-only", "--zone-ca", p.path("zone-ca.pem"),
		"--cert", p.path("server.pem"), "--key", p.path("server.key"))
	cfg := p.clientTLS("localhost", p.zoneLeaf)
	tr := &http.Transport{TLSClientConfig: cfg}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "https://"+g.listen+"/some/path?q=1", nil)
	req.Header.Set("CF-Ray", "8a1b2c3d4e5f-LHR")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	l := g.waitLog("request", 1)[0]
	want := map[string]any{
		"policy": "_zone", "sni": "localhost", "resumed": false, "method": "GET", "path": "/some/path",
		"status": float64(200), "verify": "success", "action": "allow", "cf_ray": "8a1b2c3d4e5f-LHR",
		"fingerprint": certs.Fingerprint(p.zoneLeaf.Cert.Raw), "serial": p.zoneLeaf.Cert.SerialNumber.Text(16),
	}
	for k, v := range want {
		if l[k] != v {
			t.Errorf("access line %s = %v, want %v", k, l[k], v)
		}
	}
	for _, k := range []string{"time", "host", "bytes", "duration", "remote"} {
		if _, ok := l[k]; !ok {
			t.Errorf("access line lacks %s: %v", k, l)
		}
	}
}

func TestMain_NoArgs(t *testing.T) {
	var out, errb bytes.Buffer
	if code := dispatch(nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "Usage") {
		t.Fatalf("no args: %d %q", code, errb.String())
	}
	if code := dispatch([]string{"run", "-h"}, &out, &errb); code != 0 {
		t.Fatalf("run -h: %d", code)
	}
}

func TestAdminPprofIsOptIn(t *testing.T) {
	up := newUpstream(t)
	for _, tc := range []struct {
		args []string
		want int
	}{{nil, http.StatusNotFound}, {[]string{"--admin-pprof"}, http.StatusOK}} {
		g := start(t, append([]string{"--upstream", up.URL}, tc.args...)...)
		resp, err := http.Get("http://" + g.admin + "/debug/pprof/cmdline")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%v: /debug/pprof/ answered %d, want %d", tc.args, resp.StatusCode, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	p := newPKI(t)
	good := writeConfig(t, p.dir, "upstream: http://127.0.0.1:1\nzone_ca: zone-ca.pem\n")
	out, err := exec.Command(binary, "run", "--validate", "--config", good).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "configuration is valid") {
		t.Fatalf("valid config: %v\n%s", err, out)
	}
	p.write(t, "zone-ca.pem", []byte("garbage"))
	out, err = exec.Command(binary, "run", "--validate", "--config", good).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "zone_ca") {
		t.Fatalf("broken CA: %v\n%s", err, out)
	}
}
