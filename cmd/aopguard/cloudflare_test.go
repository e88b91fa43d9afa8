package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/aopguard/aopguard/certs"
	"github.com/aopguard/aopguard/internal/cffake"
	"github.com/aopguard/aopguard/internal/testpki"
)

const (
	cfToken  = "cf-api-token-NEVER-PRINT-51e2"
	cfZoneID = "023e105f4ecef8ad9ca31a8372d0c353"
)

// cfCLI runs "aopguard cloudflare args..." with the token in the
// environment (or none when token is ""), and checks that the token is
// nowhere in what it printed.
func cfCLI(t *testing.T, token string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"cloudflare"}, args...)...)
	cmd.Env = append(os.Environ(), "CLOUDFLARE_API_TOKEN="+token)
	code, out := runCmd(t, cmd)
	if strings.Contains(out, cfToken) {
		t.Errorf("the API token appears in the output of %v:\n%s", args, out)
	}
	return code, out
}

func cfConfig(t *testing.T, p *pki, hostMode string) string {
	t.Helper()
	p.write(t, "cf-ips.txt", []byte(cloudflareAddr+"/32\n"))
	return writeConfig(t, p.dir, `
upstream: http://127.0.0.1:1
mode: require
zone_ca: zone-ca.pem
cloudflare_ips: cf-ips.txt
certificates:
  - cert: server.pem
    key: server.key
hosts:
  - name: app.example.com
    ca: host-ca.pem
    mode: `+hostMode+`
  - name: "*.apps.example.com"
    ca: host-ca.pem
`)
}

func TestCloudflareAuditCLI(t *testing.T) {
	p := newPKI(t)
	fake := cffake.New(t, cfToken, cfZoneID, "example.com")
	z := fake.Zone()
	z.ZoneLevel = true
	z.ZoneCerts = append(z.ZoneCerts, fake.Add(string(p.zoneLeaf.CertPEM()), string(p.zoneLeaf.KeyPEM()), "active"))
	hc := fake.Add(string(p.hostLeaf.CertPEM()), string(p.hostLeaf.KeyPEM()), "active")
	z.HostCerts = append(z.HostCerts, hc)
	z.Links["app.example.com"] = &cffake.Link{CertID: hc.ID, Enabled: true, Status: "active"}
	z.Links["a.apps.example.com"] = &cffake.Link{CertID: hc.ID, Enabled: true, Status: "active"}
	z.Links["*.apps.example.com"] = &cffake.Link{CertID: hc.ID, Enabled: true, Status: "active"}
	z.Proxied = []string{"a.apps.example.com", "app.example.com", "www.example.com"}
	cfg := cfConfig(t, p, "require")
	base := []string{"audit", "--config", cfg, "--zone", "example.com", "--api-url", fake.APIURL()}

	code, out := cfCLI(t, cfToken, base...)
	if code != 0 {
		t.Fatalf("audit of a consistent zone exited %d:\n%s", code, out)
	}
	for _, want := range []string{"a.apps.example.com", "*.apps.example.com", "app.example.com", "hostname", "zone"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}

	// Unlink the wildcard's own name: under require Cloudflare presents
	// the zone certificate there, which the wildcard policy does not trust.
	fake.Mu.Lock()
	delete(z.Links, "*.apps.example.com")
	fake.Mu.Unlock()
	code, out = cfCLI(t, cfToken, append(base, "--json")...)
	var rep struct {
		Rows []struct{ Hostname, Policy, Level, Verdict string }
	}
	if err := json.NewDecoder(strings.NewReader(out)).Decode(&rep); err != nil { // stderr follows
		t.Fatalf("--json: %v\n%s", err, out)
	}
	verdicts := map[string]string{}
	for _, r := range rep.Rows {
		verdicts[r.Hostname] = r.Policy + " " + r.Level + " " + r.Verdict
	}
	want := map[string]string{"*": "_zone zone ok", "app.example.com": "app.example.com hostname ok",
		"a.apps.example.com": "*.apps.example.com hostname ok", "*.apps.example.com": "*.apps.example.com zone will_break"}
	for h, v := range want {
		if verdicts[h] != v {
			t.Errorf("%s: %q, want %q (all: %v)", h, verdicts[h], v, verdicts)
		}
	}
	if code != 1 {
		t.Errorf("a will_break row must make audit exit 1, got %d", code)
	}

	// Unlink app.example.com: under log-only that is would_break, exit 0.
	fake.Mu.Lock()
	delete(z.Links, "app.example.com")
	delete(z.Links, "a.apps.example.com")
	z.ZoneLevel = false
	fake.Mu.Unlock()
	cfg = cfConfig(t, p, "log-only")
	code, out = cfCLI(t, cfToken, "audit", "--config", cfg, "--zone", cfZoneID, "--api-url", fake.APIURL(), "--json")
	if !strings.Contains(out, `"verdict": "would_break"`) {
		t.Errorf("no would_break:\n%s", out)
	}
	if code != 1 { // the zone (require) gets nothing now
		t.Errorf("exit %d, want 1", code)
	}

	// A token without the permission: 403, said plainly, exit 1.
	fake.Mu.Lock()
	fake.Deny = []string{"/origin_tls_client_auth"}
	fake.Mu.Unlock()
	code, out = cfCLI(t, cfToken, base...)
	if code != 1 || !strings.Contains(out, "HTTP 403") || !strings.Contains(out, "permission") {
		t.Errorf("403: exit %d:\n%s", code, out)
	}
	// A refused token is not echoed either.
	code, out = cfCLI(t, "wrong-"+cfToken, base...)
	if code != 1 || strings.Contains(out, "wrong-") {
		t.Errorf("refused token: exit %d:\n%s", code, out)
	}
	if code, out := cfCLI(t, "", base...); code != 2 || !strings.Contains(out, "CLOUDFLARE_API_TOKEN") {
		t.Errorf("no token: exit %d:\n%s", code, out)
	}
	bad := testpki.WriteFile(t, t.TempDir(), "bad.yaml", []byte("upstream: http://127.0.0.1:1\nhosts:\n  - name: app.example.com\n    ca: missing.pem\n"))
	if code, out := cfCLI(t, cfToken, "audit", "--config", bad, "--zone", "example.com", "--api-url", fake.APIURL()); code != 2 || !strings.Contains(out, "hosts[0].ca") {
		t.Errorf("bad config: exit %d:\n%s", code, out)
	}
	if code, out := cfCLI(t, cfToken, "audit", "--zone", "example.com", "--token", cfToken); code != 2 {
		t.Errorf("a --token flag must not exist: exit %d:\n%s", code, out)
	}
}

func TestCloudflareApplyCLI(t *testing.T) {
	p := newPKI(t)
	fake := cffake.New(t, cfToken, cfZoneID, "example.com")
	cfg := cfConfig(t, p, "require")
	apply := []string{"apply", "--config", cfg, "--zone", "example.com", "--api-url", fake.APIURL(), "--poll", "10ms",
		"--cert", p.path("host-client.pem"), "--key", p.path("host-client.key"), "--hostnames", "app.example.com,b.apps.example.com"}

	code, out := cfCLI(t, cfToken, append(apply, "--dry-run")...)
	if code != 0 || fake.WriteCount() != 0 {
		t.Fatalf("dry run: exit %d, %d writes reached the API:\n%s", code, fake.WriteCount(), out)
	}
	key, _ := os.ReadFile(p.path("host-client.key"))
	if !strings.Contains(out, `"private_key":"[REDACTED]"`) || strings.Contains(out, strings.Split(string(key), "\n")[1]) {
		t.Errorf("dry run must show the upload with the key redacted:\n%s", out)
	}

	code, out = cfCLI(t, cfToken, apply...)
	if code != 0 || fake.WriteCount() != 2 || !strings.Contains(out, "active at Cloudflare") {
		t.Fatalf("apply: exit %d, %d writes:\n%s", code, fake.WriteCount(), out)
	}
	code, out = cfCLI(t, cfToken, apply...)
	if code != 0 || fake.WriteCount() != 2 {
		t.Errorf("second apply: exit %d, %d writes in total (want still 2):\n%s", code, fake.WriteCount(), out)
	}

	// The zone certificate on a host with its own CA: refused, no write.
	code, out = cfCLI(t, cfToken, "apply", "--config", cfg, "--zone", "example.com", "--api-url", fake.APIURL(),
		"--cert", p.path("zone-client.pem"), "--key", p.path("zone-client.key"), "--hostnames", "app.example.com")
	if code != 1 || !strings.Contains(out, "refusing to link app.example.com") || fake.WriteCount() != 2 {
		t.Errorf("untrusted: exit %d, %d writes:\n%s", code, fake.WriteCount(), out)
	}
}

// TestCloudflareRotateCLI rotates app.example.com's certificate against a
// running aopguard; the fake API plays Cloudflare's edge too: once a link
// is active it connects to aopguard from a Cloudflare address presenting
// the linked certificate.
func TestCloudflareRotateCLI(t *testing.T) {
	p := newPKI(t)
	fake := cffake.New(t, cfToken, cfZoneID, "example.com")
	up := newUpstream(t)
	p.write(t, "cf-ips.txt", []byte(cloudflareAddr+"/32\n"))
	writeConfig(t, p.dir, `
upstream: `+up.URL+`
mode: require
zone_ca: zone-ca.pem
cloudflare_ips: cf-ips.txt
certificates:
  - cert: server.pem
    key: server.key
hosts:
  - name: app.example.com
    ca: host-ca.pem
`)
	g := start(t, "--config", p.path("aopguard.yaml"))
	z := fake.Zone()
	old := fake.Add(string(p.hostLeaf.CertPEM()), string(p.hostLeaf.KeyPEM()), "active")
	z.HostCerts = append(z.HostCerts, old)
	z.Links["app.example.com"] = &cffake.Link{CertID: old.ID, Enabled: true, Status: "active"}
	edge := make(chan error, 4)
	fake.Linked = func(host string, cert tls.Certificate) {
		cfg := &tls.Config{RootCAs: testpki.Pool(p.serverCA), ServerName: host,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }}
		resp, err := fromAddr(t, cloudflareAddr, g.listen, cfg, host, "")
		if err == nil && resp.StatusCode != 200 {
			err = &exec.Error{Name: resp.Status}
		}
		edge <- err
	}

	// The admin endpoints rotate relies on, directly.
	for _, tc := range []struct {
		name, host string
		body       []byte
		status     int
		want       string
	}{
		{"trusted", "app.example.com", p.hostLeaf.CertPEM(), 200, `"trusted": true`},
		{"zone certificate on the host", "app.example.com", p.zoneLeaf.CertPEM(), 200, `"reason": "zone_cert_on_host"`},
		{"zone policy", "other.example.com", p.zoneLeaf.CertPEM(), 200, `"policy": "_zone"`},
		{"not PEM", "app.example.com", []byte("hello"), 400, "not a PEM certificate chain"},
		{"too large", "app.example.com", bytes.Repeat([]byte("A"), 100<<10), 413, "too large"},
	} {
		resp, err := http.Post("http://"+g.admin+"/trust?host="+tc.host, "application/x-pem-file", bytes.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.want) {
			t.Errorf("POST /trust %s: %d %s, want %d with %q", tc.name, resp.StatusCode, body, tc.status, tc.want)
		}
	}

	rogue := p.write(t, "next-rogue.pem", p.rogueLf.CertPEM())
	rotate := []string{"rotate", "--zone", "example.com", "--api-url", fake.APIURL(), "--admin", g.admin, "--host", "app.example.com",
		"--poll", "10ms", "--wait", "20s", "--delete-old"}
	code, out := cfCLI(t, cfToken, append(rotate, "--cert", rogue, "--key", p.path("rogue-client.key"))...)
	if code != 1 || !strings.Contains(out, "refusing to rotate") || fake.WriteCount() != 0 {
		t.Fatalf("untrusted new certificate: exit %d, %d writes:\n%s", code, fake.WriteCount(), out)
	}

	next := testpki.Client(t, p.hostCA, "app.example.com 2026")
	code, out = cfCLI(t, cfToken, append(rotate, "--cert", p.write(t, "next.pem", next.CertPEM()), "--key", p.write(t, "next.key", next.KeyPEM()))...)
	if code != 0 {
		t.Fatalf("rotate: exit %d:\n%s", code, out)
	}
	if err := <-edge; err != nil {
		t.Fatalf("the edge's request with the new certificate: %v", err)
	}
	fp := certs.Fingerprint(next.Cert.Raw)
	for _, want := range []string{"policy app.example.com (require) trusts it", "linked to certificate " + old.ID, "sha256 " + fp,
		"seen: Cloudflare presents the new certificate", "deleting the old certificate " + old.ID, "rotation complete"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	resp, err := http.Get("http://" + g.admin + "/clients?host=app.example.com")
	if err != nil {
		t.Fatal(err)
	}
	var seen clientsAnswer
	err = json.NewDecoder(resp.Body).Decode(&seen)
	resp.Body.Close()
	if err != nil || len(seen.Clients) == 0 || seen.Clients[0].Fingerprint != fp || seen.Clients[0].FromCloudflare == nil {
		t.Errorf("GET /clients: %+v %v", seen, err)
	}
	fake.Mu.Lock()
	defer fake.Mu.Unlock()
	if len(z.HostCerts) != 1 || z.HostCerts[0].Leaf() == nil || !z.HostCerts[0].Leaf().Equal(next.Cert) {
		t.Errorf("after rotation Cloudflare holds %d certificates, want only the new one", len(z.HostCerts))
	}
	if strings.Contains(g.output(), cfToken) {
		t.Error("the token reached aopguard's log")
	}
}
