package main

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aopguard/aopguard/internal/testpki"
)

const sharedCAWarning = "the zone trusts Cloudflare's shared origin-pull CA and strict_hosts is off: any Cloudflare account can reach this origin; list your hostnames under hosts: and set strict_hosts: true"
const hostSharedCAWarning = "this host relies only on Cloudflare's shared origin-pull CA, which every Cloudflare account presents: use per-hostname AOP with your own CA (ca:) to shut out other accounts"

func TestSharedCAWarnings(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t)
	cases := []struct {
		name       string
		config     string
		zoneWarn   bool
		hostWarned []string
	}{
		{"zone on the shared CA, lenient", "", true, nil},
		{"strict, host inherits the shared CA", "strict_hosts: true\nhosts:\n  - name: shared.example.com\n  - name: own.example.com\n    ca: host-ca.pem\n", false, []string{"shared.example.com"}},
		{"zone on a customer CA", "zone_ca: zone-ca.pem\n", false, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			writeConfig(t, p.dir, "upstream: "+up.URL+"\n"+tc.config)
			g := start(t, "--config", p.path("aopguard.yaml"))
			if got := g.find(sharedCAWarning) != nil; got != tc.zoneWarn {
				t.Errorf("zone warning logged = %v, want %v", got, tc.zoneWarn)
			}
			var warned []string
			for _, l := range g.all(hostSharedCAWarning) {
				warned = append(warned, l["policy"].(string))
			}
			if strings.Join(warned, ",") != strings.Join(tc.hostWarned, ",") {
				t.Errorf("host warnings for %v, want %v", warned, tc.hostWarned)
			}
		})
	}
}

// TestStrictHostsWithCurl: unknown names and, with allow_no_sni: false,
// direct-to-IP requests fail at the handshake, as a user checks with curl.
func TestStrictHostsWithCurl(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t)
	writeConfig(t, p.dir, `
upstream: `+up.URL+`
mode: require
zone_ca: zone-ca.pem
strict_hosts: true
allow_no_sni: false
certificates:
  - cert: server.pem
    key: server.key
hosts:
  - name: app.example.com
`)
	g := start(t, "--config", p.path("aopguard.yaml"))
	if code, out := curl(t, p, g.listen, "app.example.com", "zone-client"); code != 0 || !strings.Contains(out, "HTTP/2 200") {
		t.Fatalf("configured host: exit %d\n%s", code, out)
	}
	for _, tc := range []struct{ name, sni string }{{"unknown name", "other.example.com"}, {"direct to IP", ""}} {
		code, out := curl(t, p, g.listen, tc.sni, "zone-client")
		if code == 0 || !strings.Contains(out, "unrecognized name") {
			t.Errorf("%s: want the unrecognized_name alert, curl exit %d:\n%s", tc.name, code, out)
		}
	}
	if n := up.count(); n != 1 {
		t.Errorf("upstream saw %d requests, want 1", n)
	}
	if v := g.metric(`aopguard_tls_handshakes_total{host="_none",result="refused",resumed="false",version="unknown"}`); v != "2" {
		t.Errorf("refused unknown-name handshakes = %q, want 2", v)
	}
}

func crlPEM(t *testing.T, ca *testpki.Cert, revoked ...*testpki.Cert) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(time.Now().UnixNano()), ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: time.Now().Add(24 * time.Hour)}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: c.Cert.SerialNumber, RevocationTime: time.Now()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

// TestCRLFromConfig: a revoked certificate is reported under log-only and
// refused under require; a CRL no CA of the policy signed is rejected at
// reload, naming the key.
func TestCRLFromConfig(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t)
	p.write(t, "host.crl", crlPEM(t, p.hostCA, p.hostLeaf))
	cfg := func(mode string) {
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
    crl: host.crl
`)
	}
	cfg("log-only")
	g := start(t, "--config", p.path("aopguard.yaml"))
	resp, _, err := get(t, g.listen, p.clientTLS("app.example.com", p.hostLeaf), "app.example.com", "/")
	if err != nil || resp.Header.Get("X-Upstream-Saw-Client-Verify") != "FAILED:revoked" {
		t.Fatalf("log-only: %v %v", resp, err)
	}
	cfg("require")
	if !g.reload() {
		t.Fatal("reload to require failed")
	}
	if _, _, err := get(t, g.listen, p.clientTLS("app.example.com", p.hostLeaf), "app.example.com", "/"); err == nil {
		t.Fatal("revoked certificate admitted under require")
	}
	p.write(t, "host.crl", crlPEM(t, p.rogueCA))
	if g.reload() {
		t.Fatal("a CRL signed by a foreign CA was accepted")
	}
	last := g.all("reload failed; still serving the previous configuration")
	if e, _ := last[len(last)-1]["error"].(string); !strings.Contains(e, "not signed by any CA of this policy") {
		t.Errorf("reload error %q", e)
	}
}

func TestBadAllowRuleExits2(t *testing.T) {
	p := newPKI(t)
	writeConfig(t, p.dir, "upstream: http://127.0.0.1:1\nhosts:\n  - name: a.example.com\n    allow:\n      sha256: [\"not-a-hash\"]\n")
	cmd := exec.Command(binary, "run", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--config", p.path("aopguard.yaml"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(stderr.String(), "hosts[0].allow.sha256[0]") {
		t.Fatalf("exit %v, stderr:\n%s", err, stderr.String())
	}
}
