package snapshot

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/aopguard/aopguard/config"
	"github.com/aopguard/aopguard/internal/testpki"
	"github.com/aopguard/aopguard/proxy"
	"github.com/aopguard/aopguard/tlsconfig"
)

// files writes a zone CA, a host CA, a client leaf of the host CA, a CRL
// the host CA signed and a server key pair into a temporary folder.
func files(t *testing.T) (dir string, leaf *testpki.Cert) {
	t.Helper()
	dir = t.TempDir()
	zoneCA := testpki.CA(t, "Zone CA")
	hostCA := testpki.CA(t, "Host CA")
	leaf = testpki.Client(t, hostCA, "app.example.com")
	server := testpki.Server(t, zoneCA, "app.example.com")
	testpki.WriteFile(t, dir, "zone-ca.pem", zoneCA.CertPEM())
	testpki.WriteFile(t, dir, "host-ca.pem", hostCA.CertPEM())
	testpki.WriteFile(t, dir, "leaf.pem", leaf.CertPEM())
	testpki.WriteFile(t, dir, "origin.pem", server.CertPEM())
	testpki.WriteFile(t, dir, "origin.key", server.KeyPEM())
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: time.Now().Add(24 * time.Hour),
	}, hostCA.Cert, hostCA.Key)
	if err != nil {
		t.Fatal(err)
	}
	testpki.WriteFile(t, dir, "host.crl", pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}))
	return dir, leaf
}

func load(t *testing.T, dir, body string) *config.Config {
	t.Helper()
	cfg, err := config.Load(testpki.WriteFile(t, dir, "aopguard.yaml", []byte(body)))
	if err != nil {
		t.Fatalf("config.Load: %v", err)
	}
	return cfg
}

// TestPoliciesErrors: what the configuration names but cannot be used is
// refused with the key (and its line) that names it.
func TestPoliciesErrors(t *testing.T) {
	dir, leaf := files(t)
	pin := hex.EncodeToString(func() []byte { s := sha256.Sum256(leaf.Cert.Raw); return s[:] }())
	const head = "upstream: http://127.0.0.1:1\nzone_ca: zone-ca.pem\n"
	tests := []struct {
		name, body string
		key, text  string // "": no error
	}{
		{"valid", head + "hosts:\n  - name: app.example.com\n    ca: host-ca.pem\n    crl: host.crl\n", "", ""},
		{"leaf as a CA", head + "hosts:\n  - name: app.example.com\n    ca: leaf.pem\n", "hosts[0].ca", "is a leaf, not a CA"},
		{"leaf pinned on purpose", head + "hosts:\n  - name: app.example.com\n    ca: leaf.pem\n    allow:\n      sha256: [\"" + pin + "\"]\n", "", ""},
		{"bad allow hash", head + "allow:\n  sha256: [\"xyz\"]\n", "allow.sha256[0]", "xyz"},
		{"CRL of another CA", head + "crl: host.crl\n", "crl", "host.crl"},
		{"missing CA file", head + "hosts:\n  - name: app.example.com\n    ca: nowhere.pem\n", "hosts[0].ca", "nowhere.pem"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := load(t, dir, tt.body)
			_, hosts, expiries, err := Policies(cfg)
			if tt.key == "" {
				if err != nil {
					t.Fatalf("Policies: %v", err)
				}
				if len(hosts) != len(cfg.Hosts) || len(expiries) == 0 {
					t.Errorf("got %d host policies and %d expiries", len(hosts), len(expiries))
				}
				return
			}
			var ce *config.Error
			if !errors.As(err, &ce) || ce.Key != tt.key || ce.Line == 0 || !strings.Contains(err.Error(), tt.text) {
				t.Errorf("Policies error %v; want one at %s with its line, saying %q", err, tt.key, tt.text)
			}
		})
	}
}

// TestBuild: a configuration compiles to a Snapshot holding its policies,
// their routes, the configured server certificate, every expiry and each
// CRL's NextUpdate.
func TestBuild(t *testing.T) {
	dir, _ := files(t)
	cfg := load(t, dir, "upstream: http://127.0.0.1:1\nzone_ca: zone-ca.pem\ncertificates:\n  - cert: origin.pem\n    key: origin.key\n"+
		"hosts:\n  - name: app.example.com\n    ca: host-ca.pem\n    crl: host.crl\n    upstream: http://127.0.0.1:2\n")
	snap, err := Build(cfg, Env{
		SelfSigned: func() (tls.Certificate, error) {
			return tls.Certificate{}, errors.New("not wanted: a certificate is configured")
		},
		Tickets:   mustTickets(t),
		Upstreams: proxy.NewUpstreams(zerolog.Nop(), nil),
		Log:       zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := snap.Set.Lookup("app.example.com"); !ok || p.Name() != "app.example.com" {
		t.Errorf("app.example.com selects %v", p)
	}
	if snap.Routes == nil || snap.Routes.Set != snap.Set {
		t.Error("routes not built for the snapshot's policies")
	}
	if len(snap.Pairs) != 1 || snap.Pairs[0].Leaf.Subject.CommonName != "app.example.com" {
		t.Errorf("server certificates %v", snap.Pairs)
	}
	roles := map[string]int{}
	for _, e := range snap.Expiries {
		roles[e.Role]++
	}
	if roles["zone_ca"] != 1 || roles["host_ca"] != 1 || roles["server"] != 1 {
		t.Errorf("expiries by role %v, want one zone_ca, host_ca and server", roles)
	}
	if _, ok := snap.CRLNextUpdates["app.example.com"]; !ok || len(snap.CRLNextUpdates) != 1 {
		t.Errorf("CRL NextUpdates %v, want app.example.com's", snap.CRLNextUpdates)
	}
	if snap.IPs == nil {
		t.Error("no Cloudflare ranges")
	}
}

func mustTickets(t *testing.T) *tlsconfig.TicketKeys {
	t.Helper()
	k, err := tlsconfig.NewTicketKeys()
	if err != nil {
		t.Fatal(err)
	}
	return k
}
