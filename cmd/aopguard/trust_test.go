package main

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aopguard/aopguard/certs"
	"github.com/aopguard/aopguard/internal/testpki"
)

// TestTrustBundleHoldingALeaf: a ca: or zone_ca file holding a leaf (which
// would act as a pin and break at its renewal) is refused by --validate
// and at start, naming the file, the key and its line; listing the leaf
// in the same policy's allow.sha256 makes the pin deliberate and accepted.
func TestTrustBundleHoldingALeaf(t *testing.T) {
	p := newPKI(t)
	fp := certs.Fingerprint(p.hostLeaf.Cert.Raw)
	cases := []struct {
		name   string
		config string
		want   string // "" when valid
	}{
		{"host ca is a leaf", "upstream: http://127.0.0.1:1\nhosts:\n  - name: app.example.com\n    ca: host-client.pem\n",
			"aopguard.yaml: hosts[0].ca (line 4): " + p.path("host-client.pem") + ": certificate 1 of 1 (app.example.com, sha256 " + fp + ") is a leaf, not a CA"},
		{"zone_ca bundle with a leaf after the CA", "upstream: http://127.0.0.1:1\nzone_ca: bundle.pem\n",
			"aopguard.yaml: zone_ca (line 2): " + p.path("bundle.pem") + ": certificate 2 of 2 (app.example.com"},
		{"a pin under another policy's allow is not deliberate", "upstream: http://127.0.0.1:1\nallow:\n  sha256: [" + fp + "]\nhosts:\n  - name: app.example.com\n    ca: host-client.pem\n",
			"also list its sha256 under hosts[0].allow.sha256"},
		{"deliberate pin", "upstream: http://127.0.0.1:1\nhosts:\n  - name: app.example.com\n    ca: host-client.pem\n    allow:\n      sha256: [" + fp + "]\n", ""},
		{"CA bundles are fine", "upstream: http://127.0.0.1:1\nzone_ca: zone-ca.pem\nhosts:\n  - name: app.example.com\n    ca: host-ca.pem\n", ""},
	}
	p.write(t, "bundle.pem", append(p.zoneCA.CertPEM(), p.hostLeaf.CertPEM()...))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			writeConfig(t, p.dir, tc.config)
			for _, args := range [][]string{{"run", "--validate"}, {"run", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"}} {
				args = append(args, "--config", p.path("aopguard.yaml"))
				if tc.want == "" {
					if code, out := runCmd(t, exec.Command(binary, append(args, "--validate")...)); code != 0 {
						t.Errorf("%v: exit %d\n%s", args, code, out)
					}
					continue
				}
				code, out := runCmd(t, exec.Command(binary, args...))
				if code != 2 || !strings.Contains(out, tc.want) {
					t.Errorf("%v: exit %d, want 2 and %q in\n%s", args, code, tc.want, out)
				}
			}
		})
	}
}

// crlAt is a CRL of ca valid until next.
func crlAt(t *testing.T, ca *testpki.Cert, next time.Time) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(time.Now().UnixNano()), ThisUpdate: next.Add(-48 * time.Hour), NextUpdate: next}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

// TestCRLErrorsNameKeyAndLine: CRL errors read like every other config
// error.
func TestCRLErrorsNameKeyAndLine(t *testing.T) {
	p := newPKI(t)
	p.write(t, "foreign.crl", crlAt(t, p.rogueCA, time.Now().Add(time.Hour)))
	p.write(t, "garbage.crl", []byte("not a CRL"))
	for _, tc := range []struct{ crl, want string }{
		{"foreign.crl", "aopguard.yaml: hosts[0].crl (line 5): " + p.path("foreign.crl") + ": the CRL (issuer CN=rogue CA,O=aopguard tests) is not signed by any CA of this policy"},
		{"garbage.crl", "aopguard.yaml: hosts[0].crl (line 5): " + p.path("garbage.crl") + ": not a CRL"},
		{"absent.crl", "aopguard.yaml: hosts[0].crl (line 5): open " + p.path("absent.crl")},
	} {
		writeConfig(t, p.dir, "upstream: http://127.0.0.1:1\nhosts:\n  - name: app.example.com\n    ca: host-ca.pem\n    crl: "+tc.crl+"\n")
		code, out := runCmd(t, exec.Command(binary, "run", "--validate", "--config", p.path("aopguard.yaml")))
		if code != 2 || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit %d, want 2 and %q in\n%s", tc.crl, code, tc.want, out)
		}
	}
}

// TestStaleCRL: a CRL past its NextUpdate is used with a warning by
// default and refuses every certificate with crl_stale: refuse; either
// way it is logged and counted, and its NextUpdate is a metric.
func TestStaleCRL(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t)
	past := time.Now().Add(-time.Hour).Truncate(time.Second)
	p.write(t, "host.crl", crlAt(t, p.hostCA, past))
	for _, tc := range []struct {
		name, stale, action string
		admitted            bool
	}{
		{"default warns", "", "warn", true},
		{"warn", "    crl_stale: warn\n", "warn", true},
		{"refuse", "    crl_stale: refuse\n", "refuse", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			writeConfig(t, p.dir, "upstream: "+up.URL+"\ncertificates:\n  - cert: server.pem\n    key: server.key\nhosts:\n  - name: app.example.com\n    ca: host-ca.pem\n    mode: require\n    crl: host.crl\n"+tc.stale)
			g := start(t, "--config", p.path("aopguard.yaml"))
			resp, _, err := get(t, g.listen, p.clientTLS("app.example.com", p.hostLeaf), "app.example.com", "/")
			if admitted := err == nil && resp.StatusCode == 200; admitted != tc.admitted {
				t.Errorf("admitted %v (%v), want %v", admitted, err, tc.admitted)
			}
			l := g.find("CRL is past its NextUpdate")
			if l == nil || l["policy"] != "app.example.com" || l["crl_stale"] != tc.action {
				t.Errorf("log line %v, want policy app.example.com and crl_stale %s", l, tc.action)
			}
			if v := g.metric(`aopguard_crl_stale_total{action="` + tc.action + `",host="app.example.com"}`); v != "1" {
				t.Errorf("aopguard_crl_stale_total = %q, want 1: %q", v, g.metrics("aopguard_crl"))
			}
			if v := g.metric(`aopguard_crl_next_update_timestamp_seconds{host="app.example.com"}`); v == "" {
				t.Error("no aopguard_crl_next_update_timestamp_seconds series")
			}
			if !tc.admitted {
				if v := g.metric(`aopguard_client_cert_verifications_total{action="reject",host="app.example.com",mode="require",reason="crl_stale",result="failed",source="other"}`); v != "1" {
					t.Errorf("crl_stale rejections = %q, want 1", v)
				}
			}
		})
	}
}

// TestACMERootErrorNamesKeyAndLine: the ACME CA root, read before the
// rest, is reported like every other file the configuration names.
func TestACMERootErrorNamesKeyAndLine(t *testing.T) {
	p := newPKI(t)
	p.write(t, "acme-root.pem", []byte("garbage"))
	writeConfig(t, p.dir, "upstream: http://127.0.0.1:1\nacme:\n  email: ops@example.com\n  ca: https://127.0.0.1:1/directory\n"+
		"  ca_root: acme-root.pem\n  names: [app.example.com]\n  challenge: tls-alpn-01\n  storage: acme\n")
	code, out := runCmd(t, exec.Command(binary, "run", "--validate", "--config", p.path("aopguard.yaml")))
	if want := "aopguard.yaml: acme.ca_root (line 5): " + p.path("acme-root.pem") + ": no certificate found"; code != 2 || !strings.Contains(out, want) {
		t.Errorf("exit %d, want 2 and %q in\n%s", code, want, out)
	}
}
