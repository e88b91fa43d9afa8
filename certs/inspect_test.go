package certs

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/aopguard/aopguard/internal/testpki"
)

func TestInspectCloudflareCA(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	i := Inspect(CloudflareOriginPullCA(), nil, now)
	if i.Cloudflare != IsCloudflareCA {
		t.Errorf("Cloudflare = %v, want %v", i.Cloudflare, IsCloudflareCA)
	}
	if !i.IsCA || !i.SelfSigned || i.MaxPathLen != 2 {
		t.Errorf("IsCA %v SelfSigned %v MaxPathLen %d, want a self-signed CA with path length 2", i.IsCA, i.SelfSigned, i.MaxPathLen)
	}
	if i.KeyType != "RSA 4096" {
		t.Errorf("KeyType %q", i.KeyType)
	}
	if i.Fingerprint != "9a1ac2b4be15f9f27eee20a734cba4e9898f61001b3bd7c84b69b56a3e25a2b9" {
		t.Errorf("Fingerprint %s", i.Fingerprint)
	}
	// 2026-01-01 to 2029-11-01T17:00Z.
	if i.DaysLeft != 1400 {
		t.Errorf("DaysLeft = %d, want 1400", i.DaysLeft)
	}
	var b strings.Builder
	if err := i.WriteText(&b, "  "); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"  subject:     CN=origin-pull.cloudflare.net,OU=Origin Pull,O=CloudFlare\\, Inc.,L=San Francisco,ST=California,C=US\n",
		"(self-signed)",
		"  key:         RSA 4096\n",
		"(1400 days left)",
		"  sha256:      9a1ac2b4be15f9f27eee20a734cba4e9898f61001b3bd7c84b69b56a3e25a2b9\n",
		"CA (CA:TRUE, path length 2)",
		"keyCertSign, cRLSign",
		"this IS Cloudflare's origin-pull CA",
		"  SANs:        none\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
}

func TestInspectLeafAndNotes(t *testing.T) {
	t.Parallel()
	ca := testpki.CA(t, "Example AOP CA")
	now := time.Now()
	cases := []struct {
		name      string
		cert      *x509.Certificate
		want      []string
		wantNotes []string
	}{
		{
			name: "client leaf",
			cert: testpki.New(t, ca, testpki.Options{CN: "app.example.com", DNS: []string{"app.example.com"}, NotAfter: now.Add(100*24*time.Hour + time.Hour)}).Cert,
			want: []string{
				"subject:     CN=app.example.com,O=aopguard tests", "issuer:      CN=Example AOP CA,O=aopguard tests\n",
				"SANs:        DNS:app.example.com", "key:         ECDSA P-256", "(100 days left)", "type:        leaf (CA:FALSE)",
				"ext usage:   clientAuth", "does not chain to Cloudflare's origin-pull CA",
			},
		},
		{
			name:      "expired",
			cert:      testpki.New(t, ca, testpki.Options{CN: "old", NotBefore: now.Add(-72 * time.Hour), NotAfter: now.Add(-49 * time.Hour)}).Cert,
			want:      []string{"(expired 3 days ago)"},
			wantNotes: []string{"EXPIRED 3 days ago"},
		},
		{
			name:      "server certificate",
			cert:      testpki.Server(t, ca, "origin.example.com", "192.0.2.1").Cert,
			want:      []string{"SANs:        DNS:origin.example.com, IP:192.0.2.1", "ext usage:   serverAuth"},
			wantNotes: []string{"expires in 0 days: renew it (Cloudflare alerts at 30 and 14 days)", "no clientAuth extended key usage: origins refuse it as a client certificate"},
		},
		{
			name: "RSA CA",
			cert: testpki.New(t, nil, testpki.Options{CN: "rsa CA", IsCA: true, RSABits: 2048, NotAfter: now.Add(400 * 24 * time.Hour)}).Cert,
			want: []string{"key:         RSA 2048", "type:        CA (CA:TRUE): trust it at the origin", "(self-signed)"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			i := Inspect(tc.cert, nil, now)
			if i.Cloudflare != NotCloudflare {
				t.Errorf("Cloudflare = %v for a test certificate", i.Cloudflare)
			}
			if strings.Join(i.Notes, "|") != strings.Join(tc.wantNotes, "|") {
				t.Errorf("Notes = %q, want %q", i.Notes, tc.wantNotes)
			}
			var b strings.Builder
			i.WriteText(&b, "")
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, b.String())
				}
			}
		})
	}
}

// chainsTo is checked with a test root standing in for Cloudflare's, whose
// key nobody here has: directly, through an intermediate given alongside,
// and not at all.
func TestChainsTo(t *testing.T) {
	t.Parallel()
	root := testpki.CA(t, "stand-in origin-pull CA")
	inter := testpki.New(t, root, testpki.Options{CN: "intermediate", IsCA: true})
	direct := testpki.Client(t, root, "direct")
	viaInter := testpki.Client(t, inter, "via intermediate")
	lookalike := testpki.CA(t, "stand-in origin-pull CA") // same name, other key
	forged := testpki.Client(t, lookalike, "forged")
	expired := testpki.New(t, root, testpki.Options{CN: "expired", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	cases := []struct {
		name   string
		c      *testpki.Cert
		others []*x509.Certificate
		want   bool
	}{
		{"issued directly", direct, nil, true},
		{"expired, still issued by it", expired, nil, true},
		{"through a bundled intermediate", viaInter, []*x509.Certificate{inter.Cert}, true},
		{"intermediate missing", viaInter, nil, false},
		{"same issuer name, other key", forged, []*x509.Certificate{lookalike.Cert}, false},
		{"the intermediate itself", inter, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := chainsTo(tc.c.Cert, root.Cert, tc.others, 4); got != tc.want {
				t.Fatalf("chainsTo = %v, want %v", got, tc.want)
			}
		})
	}
	if Inspect(direct.Cert, nil, time.Now()).Cloudflare != NotCloudflare {
		t.Error("a test leaf is reported as chaining to the real Cloudflare CA")
	}
}
