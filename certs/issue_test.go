package certs_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aopguard/aopguard/certs"
	"github.com/aopguard/aopguard/internal/testpki"
)

var issueNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestNewCAAndIssueClient(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		key        certs.KeyType
		rsaBits    int
		caDays     int
		clientDays int
		cn         string
		wantKey    string
		wantDays   [2]int // effective CA and client validity
		wantSAN    []string
	}{
		{"defaults", "", 0, 0, 0, "app.example.com", "ECDSA P-256", [2]int{3650, 365}, []string{"app.example.com"}},
		{"ecdsa explicit, short", certs.KeyECDSA, 0, 30, 7, "zone client", "ECDSA P-256", [2]int{30, 7}, nil},
		{"rsa", certs.KeyRSA, 2048, 100, 90, "*.example.com", "RSA 2048", [2]int{100, 90}, []string{"*.example.com"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ca, err := certs.NewCA(certs.IssueOptions{CommonName: "Example AOP CA", Days: tc.caDays, Key: tc.key, RSABits: tc.rsaBits, Now: issueNow})
			if err != nil {
				t.Fatal(err)
			}
			c := ca.Cert
			if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
				t.Errorf("CA: IsCA %v, constraints %v, pathlen %d/%v; want CA:TRUE pathlen 0", c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
			}
			if c.KeyUsage&x509.KeyUsageCertSign == 0 || c.KeyUsage&x509.KeyUsageCRLSign == 0 {
				t.Errorf("CA key usage %v lacks keyCertSign/cRLSign", certs.KeyUsageNames(c.KeyUsage))
			}
			if err := c.CheckSignatureFrom(c); err != nil {
				t.Errorf("CA is not self-signed: %v", err)
			}
			if c.Subject.CommonName != "Example AOP CA" {
				t.Errorf("CA CN %q", c.Subject.CommonName)
			}
			if got := c.NotAfter.Sub(issueNow); got != time.Duration(tc.wantDays[0])*24*time.Hour {
				t.Errorf("CA validity from now = %v, want %d days", got, tc.wantDays[0])
			}
			if got := certs.KeyDescription(c.PublicKey); got != tc.wantKey {
				t.Errorf("CA key %s, want %s", got, tc.wantKey)
			}

			leaf, err := certs.IssueClient(ca, certs.IssueOptions{CommonName: tc.cn, Days: tc.clientDays, Key: tc.key, RSABits: tc.rsaBits, Now: issueNow})
			if err != nil {
				t.Fatal(err)
			}
			l := leaf.Cert
			if l.IsCA || !l.BasicConstraintsValid {
				t.Errorf("leaf: IsCA %v, constraints valid %v; want CA:FALSE", l.IsCA, l.BasicConstraintsValid)
			}
			if !slices.Equal(l.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
				t.Errorf("leaf EKU %v, want clientAuth only", certs.ExtKeyUsageNames(l.ExtKeyUsage))
			}
			if l.KeyUsage&x509.KeyUsageCertSign != 0 {
				t.Error("leaf may sign certificates")
			}
			if l.Subject.CommonName != tc.cn || !slices.Equal(l.DNSNames, tc.wantSAN) {
				t.Errorf("leaf CN %q SANs %v, want %q %v", l.Subject.CommonName, l.DNSNames, tc.cn, tc.wantSAN)
			}
			if got := l.NotAfter.Sub(issueNow); got != time.Duration(tc.wantDays[1])*24*time.Hour {
				t.Errorf("leaf validity from now = %v, want %d days", got, tc.wantDays[1])
			}
			if !l.NotBefore.Before(issueNow) {
				t.Errorf("leaf NotBefore %v is not backdated for clock skew", l.NotBefore)
			}
			if l.SerialNumber.Sign() <= 0 || l.SerialNumber.Cmp(c.SerialNumber) == 0 {
				t.Errorf("serial numbers: leaf %v, CA %v", l.SerialNumber, c.SerialNumber)
			}
			roots := x509.NewCertPool()
			roots.AddCert(c)
			if _, err := l.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: issueNow, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("leaf does not verify as a client certificate under the CA: %v", err)
			}
			keyPEM, err := leaf.KeyPEM()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(keyPEM, []byte("-----BEGIN PRIVATE KEY-----\n")) {
				t.Errorf("key PEM is not PKCS#8:\n%s", keyPEM)
			}
			pair, err := tls.X509KeyPair(leaf.CertPEM(), keyPEM)
			if err != nil {
				t.Fatalf("issued cert and key do not form a pair: %v", err)
			}
			switch tc.wantKey {
			case "RSA 2048":
				if _, ok := pair.PrivateKey.(*rsa.PrivateKey); !ok {
					t.Errorf("key %T, want RSA", pair.PrivateKey)
				}
				if l.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
					t.Error("RSA leaf lacks keyEncipherment")
				}
			default:
				if k, ok := pair.PrivateKey.(*ecdsa.PrivateKey); !ok || k.Curve != elliptic.P256() {
					t.Errorf("key %T, want ECDSA P-256", pair.PrivateKey)
				}
			}
		})
	}
}

func TestIssueErrors(t *testing.T) {
	t.Parallel()
	ca, err := certs.NewCA(certs.IssueOptions{CommonName: "short CA", Days: 30, Now: issueNow})
	if err != nil {
		t.Fatal(err)
	}
	other, err := certs.NewCA(certs.IssueOptions{CommonName: "other CA", Now: issueNow})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := certs.IssueClient(ca, certs.IssueOptions{CommonName: "leaf", Days: 1, Now: issueNow})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		do   func() error
		want string
	}{
		{"no CN", func() error { _, err := certs.NewCA(certs.IssueOptions{CommonName: " "}); return err }, "common name is required"},
		{"negative days", func() error { _, err := certs.NewCA(certs.IssueOptions{CommonName: "x", Days: -1}); return err }, "must be positive"},
		{"bad RSA size", func() error {
			_, err := certs.NewCA(certs.IssueOptions{CommonName: "x", Key: certs.KeyRSA, RSABits: 1024})
			return err
		}, "want 2048, 3072 or 4096"},
		{"bad key type", func() error { _, err := certs.NewCA(certs.IssueOptions{CommonName: "x", Key: "dsa"}); return err }, "want one of ecdsa, rsa, ml-dsa-44, ml-dsa-65, ml-dsa-87"},
		{"outlives CA", func() error {
			_, err := certs.IssueClient(ca, certs.IssueOptions{CommonName: "x", Days: 365, Now: issueNow})
			return err
		}, "would outlive the CA"},
		{"leaf as issuer", func() error {
			_, err := certs.IssueClient(leaf, certs.IssueOptions{CommonName: "x", Days: 1, Now: issueNow})
			return err
		}, "is not a CA certificate"},
		{"key of another CA", func() error {
			_, err := certs.IssueClient(&certs.Issued{Cert: ca.Cert, Key: other.Key}, certs.IssueOptions{CommonName: "x", Days: 1, Now: issueNow})
			return err
		}, "private key does not belong"},
		{"nil CA", func() error { _, err := certs.IssueClient(nil, certs.IssueOptions{CommonName: "x"}); return err }, "no CA"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestParseKeyType(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]certs.KeyType{"ecdsa": certs.KeyECDSA, "RSA": certs.KeyRSA} {
		if got, err := certs.ParseKeyType(in); err != nil || got != want {
			t.Errorf("ParseKeyType(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := certs.ParseKeyType("ed25519"); err == nil {
		t.Error("ParseKeyType(ed25519) succeeded")
	}
}

func TestPairPaths(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, cert, key string }{
		{"ca", "ca.pem", "ca.key"},
		{"ca.pem", "ca.pem", "ca.key"},
		{"dir/client.key", "dir/client.pem", "dir/client.key"},
		{"my.client", "my.client.pem", "my.client.key"},
	} {
		c, k := certs.PairPaths(tc.in)
		if c != tc.cert || k != tc.key {
			t.Errorf("PairPaths(%q) = %q, %q; want %q, %q", tc.in, c, k, tc.cert, tc.key)
		}
	}
}

func TestWritePairPermissionsAndForce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, err := certs.NewCA(certs.IssueOptions{CommonName: "CA one"})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := certs.PairPaths(filepath.Join(dir, "ca"))
	if err := certs.WritePair(ca, certFile, keyFile, false); err != nil {
		t.Fatal(err)
	}
	mode := func(f string) os.FileMode {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		return st.Mode().Perm()
	}
	if m := mode(keyFile); m != 0o600 {
		t.Errorf("key mode %o, want 600", m)
	}
	if m := mode(certFile); m&0o022 != 0 || m&0o400 == 0 {
		t.Errorf("certificate mode %o, want 644 (less any umask)", m)
	}
	loaded, err := certs.LoadIssuer(certFile, keyFile)
	if err != nil {
		t.Fatalf("LoadIssuer of what WritePair wrote: %v", err)
	}
	if !loaded.Cert.Equal(ca.Cert) {
		t.Error("LoadIssuer returned another certificate")
	}

	before, _ := os.ReadFile(keyFile)
	second, err := certs.NewCA(certs.IssueOptions{CommonName: "CA two"})
	if err != nil {
		t.Fatal(err)
	}
	err = certs.WritePair(second, certFile, keyFile, false)
	if !errors.Is(err, certs.ErrExists) {
		t.Fatalf("overwrite without force: err = %v, want ErrExists", err)
	}
	if after, _ := os.ReadFile(keyFile); !bytes.Equal(before, after) {
		t.Fatal("the key was overwritten without force")
	}
	// Only the key exists: still nothing is written.
	onlyKey := filepath.Join(dir, "half")
	os.WriteFile(onlyKey+".key", []byte("old"), 0o600)
	if err := certs.WritePair(second, onlyKey+".pem", onlyKey+".key", false); !errors.Is(err, certs.ErrExists) {
		t.Fatalf("existing key only: err = %v, want ErrExists", err)
	}
	if _, err := os.Stat(onlyKey + ".pem"); err == nil {
		t.Fatal("the certificate was written although its key file exists")
	}

	// With force: replaced, and the key is 0600 even if it was not.
	if err := os.Chmod(keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := certs.WritePair(second, certFile, keyFile, true); err != nil {
		t.Fatal(err)
	}
	if m := mode(keyFile); m != 0o600 {
		t.Errorf("forced key mode %o, want 600", m)
	}
	got, err := certs.LoadIssuer(certFile, keyFile)
	if err != nil || got.Cert.Subject.CommonName != "CA two" {
		t.Fatalf("after force: %v, %v", got, err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

func TestLoadIssuerRefusesLeaf(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testpki.CA(t, "CA")
	leaf := testpki.Client(t, ca, "leaf")
	cf := testpki.WriteFile(t, dir, "leaf.pem", leaf.CertPEM())
	kf := testpki.WriteFile(t, dir, "leaf.key", leaf.KeyPEM())
	if _, err := certs.LoadIssuer(cf, kf); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Fatalf("LoadIssuer(leaf) = %v, want a not-a-CA error", err)
	}
	if _, err := certs.LoadIssuer(filepath.Join(dir, "absent.pem"), kf); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("LoadIssuer(absent) = %v, want ErrNotExist", err)
	}
}
