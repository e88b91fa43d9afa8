package certs_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aopguard/aopguard/certs"
	"github.com/aopguard/aopguard/internal/testpki"
)

func TestCloudflareOriginPullCA(t *testing.T) {
	t.Parallel()
	ca := certs.CloudflareOriginPullCA()
	if ca == nil {
		t.Fatal("CloudflareOriginPullCA() = nil")
	}
	if got, want := ca.Subject.CommonName, "origin-pull.cloudflare.net"; got != want {
		t.Errorf("CN = %q, want %q", got, want)
	}
	if got, want := certs.Fingerprint(ca.Raw), "9a1ac2b4be15f9f27eee20a734cba4e9898f61001b3bd7c84b69b56a3e25a2b9"; got != want {
		t.Errorf("SHA-256 fingerprint = %s, want %s", got, want)
	}
	if want := time.Date(2029, 11, 1, 17, 0, 0, 0, time.UTC); !ca.NotAfter.Equal(want) {
		t.Errorf("NotAfter = %v, want %v", ca.NotAfter, want)
	}
	if !ca.IsCA || !ca.BasicConstraintsValid {
		t.Errorf("IsCA = %v (basic constraints valid %v), want a CA", ca.IsCA, ca.BasicConstraintsValid)
	}
	if err := ca.CheckSignatureFrom(ca); err != nil {
		t.Errorf("embedded CA is not a valid self-signed root: %v", err)
	}
	if got := certs.Describe(ca); got != "origin-pull.cloudflare.net" {
		t.Errorf("Describe = %q", got)
	}
}

func TestCloudflareOriginPullPEM(t *testing.T) {
	t.Parallel()
	p := certs.CloudflareOriginPullPEM()
	cs, err := certs.ParseBundle(p)
	if err != nil || len(cs) != 1 {
		t.Fatalf("ParseBundle(CloudflareOriginPullPEM()) = %d certs, %v; want 1, nil", len(cs), err)
	}
	if !cs[0].Equal(certs.CloudflareOriginPullCA()) {
		t.Error("PEM does not hold the same certificate as CloudflareOriginPullCA()")
	}
	// The PEM is a copy: scribbling on it must not affect later callers.
	for i := range p {
		p[i] = 'x'
	}
	if again := certs.CloudflareOriginPullPEM(); bytes.Contains(again, []byte("xxxx")) {
		t.Error("CloudflareOriginPullPEM returns shared memory")
	}
}

func TestFingerprint(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   []byte
		want string
	}{
		{nil, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{[]byte("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
	}
	for _, tt := range tests {
		if got := certs.Fingerprint(tt.in); got != tt.want {
			t.Errorf("Fingerprint(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestDescribe(t *testing.T) {
	t.Parallel()
	ca := testpki.CA(t, "Some CA")
	noCN := testpki.New(t, ca, testpki.Options{})
	tests := []struct {
		c    *x509.Certificate
		want string
	}{
		{ca.Cert, "Some CA"},
		{noCN.Cert, "O=aopguard tests"},
	}
	for _, tt := range tests {
		if got := certs.Describe(tt.c); got != tt.want {
			t.Errorf("Describe = %q, want %q", got, tt.want)
		}
	}
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestParseBundle(t *testing.T) {
	t.Parallel()
	oldCA := testpki.CA(t, "old CA")
	newCA := testpki.CA(t, "new CA")
	leaf := testpki.Client(t, oldCA, "leaf")
	oldPEM, newPEM := oldCA.CertPEM(), newCA.CertPEM()
	// DER of the P-256 curve OID, as openssl writes in EC PARAMETERS.
	ecParams := pemBlock("EC PARAMETERS", []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07})

	tests := []struct {
		name    string
		in      []byte
		wantCNs []string
		wantErr string // substring; "" means success
		noCert  bool   // error must be ErrNoCertificate
	}{
		{name: "one cert", in: oldPEM, wantCNs: []string{"old CA"}},
		{name: "rotation bundle keeps order", in: cat(oldPEM, newPEM), wantCNs: []string{"old CA", "new CA"}},
		{name: "CRLF line endings", in: bytes.ReplaceAll(oldPEM, []byte("\n"), []byte("\r\n")), wantCNs: []string{"old CA"}},
		{name: "trailing blank lines", in: cat(oldPEM, []byte("\n\n  \n")), wantCNs: []string{"old CA"}},
		{name: "cert plus private key is skipped", in: cat(leaf.CertPEM(), leaf.KeyPEM()), wantCNs: []string{"leaf"}},
		{name: "private key before cert is skipped", in: cat(leaf.KeyPEM(), leaf.CertPEM()), wantCNs: []string{"leaf"}},
		{name: "EC PARAMETERS before cert", in: cat(ecParams, newPEM), wantCNs: []string{"new CA"}},
		{name: "empty", in: nil, wantErr: "no certificate", noCert: true},
		{name: "whitespace only", in: []byte(" \n\t\n"), wantErr: "no certificate", noCert: true},
		{name: "only a private key", in: leaf.KeyPEM(), wantErr: "no certificate", noCert: true},
		{name: "garbage text", in: []byte("this is not a certificate\n"), wantErr: "no certificate", noCert: true},
		{name: "truncated PEM", in: oldPEM[:len(oldPEM)/2], wantErr: "no certificate"},
		{name: "truncated PEM missing END line", in: oldPEM[:len(oldPEM)-len("-----END CERTIFICATE-----\n")], wantErr: "no certificate"},
		{name: "second cert truncated", in: cat(oldPEM, newPEM[:len(newPEM)/2]), wantErr: "after certificate 1"},
		{name: "truncated cert then complete cert", in: cat(oldPEM[:len(oldPEM)/2], newPEM), wantErr: "no certificate"},
		{name: "valid cert followed by junk", in: cat(oldPEM, []byte("junk junk\n")), wantErr: "after certificate 1"},
		{name: "non-certificate DER in CERTIFICATE block", in: pemBlock("CERTIFICATE", []byte{0x30, 0x03, 0x02, 0x01, 0x01}), wantErr: "PEM block 1"},
		{name: "bad DER after a good cert", in: cat(ecParams, oldPEM, pemBlock("CERTIFICATE", []byte("nope"))), wantErr: "PEM block 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cs, err := certs.ParseBundle(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseBundle = %d certs, nil error; want error containing %q (a damaged file must never be a smaller bundle)", len(cs), tt.wantErr)
				}
				if cs != nil {
					t.Errorf("ParseBundle returned %d certs along with error %v", len(cs), err)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %q does not contain %q", err, tt.wantErr)
				}
				if tt.noCert && !errors.Is(err, certs.ErrNoCertificate) {
					t.Errorf("error %v is not ErrNoCertificate", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseBundle: %v", err)
			}
			var got []string
			for _, c := range cs {
				got = append(got, c.Subject.CommonName)
			}
			if strings.Join(got, ",") != strings.Join(tt.wantCNs, ",") {
				t.Errorf("certs = %q, want %q", got, tt.wantCNs)
			}
		})
	}
}

func TestLoadBundle(t *testing.T) {
	t.Parallel()
	ca := testpki.CA(t, "bundle CA")
	dir := t.TempDir()
	good := testpki.WriteFile(t, dir, "good.pem", ca.CertPEM())
	junk := testpki.WriteFile(t, dir, "junk.pem", []byte("hello\n"))
	trailing := testpki.WriteFile(t, dir, "trailing.pem", cat(ca.CertPEM(), []byte("garbage")))
	missing := filepath.Join(dir, "missing.pem")

	cs, err := certs.LoadBundle(good)
	if err != nil || len(cs) != 1 || !cs[0].Equal(ca.Cert) {
		t.Fatalf("LoadBundle(good) = %d certs, %v", len(cs), err)
	}

	tests := []struct {
		name string
		path string
		is   error
	}{
		{"no certificate", junk, certs.ErrNoCertificate},
		{"trailing garbage", trailing, nil},
		{"missing file", missing, fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs, err := certs.LoadBundle(tt.path)
			if err == nil {
				t.Fatalf("LoadBundle = %d certs, nil error", len(cs))
			}
			if !strings.Contains(err.Error(), tt.path) {
				t.Errorf("error %q does not name the file %s", err, tt.path)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
		})
	}
}

func TestLoadKeyPair(t *testing.T) {
	t.Parallel()
	root := testpki.CA(t, "server root")
	inter := testpki.New(t, root, testpki.Options{CN: "server intermediate", IsCA: true})
	srv := testpki.Server(t, inter, "origin.example.com")
	other := testpki.Server(t, root, "other.example.com")
	dir := t.TempDir()
	certFile := testpki.WriteFile(t, dir, "cert.pem", srv.CertPEM())
	chainFile := testpki.WriteFile(t, dir, "chain.pem", cat(srv.CertPEM(), inter.CertPEM()))
	keyFile := testpki.WriteFile(t, dir, "key.pem", srv.KeyPEM())
	otherKey := testpki.WriteFile(t, dir, "other-key.pem", other.KeyPEM())
	garbage := testpki.WriteFile(t, dir, "garbage.pem", []byte("not a certificate"))
	garbageKey := testpki.WriteFile(t, dir, "garbage-key.pem", []byte("not a key"))
	missing := filepath.Join(dir, "missing.pem")

	t.Run("good pair", func(t *testing.T) {
		for _, f := range []string{certFile, chainFile} {
			pair, err := certs.LoadKeyPair(f, keyFile)
			if err != nil {
				t.Fatalf("LoadKeyPair(%s): %v", f, err)
			}
			if pair.Leaf == nil || !pair.Leaf.Equal(srv.Cert) {
				t.Errorf("%s: Leaf = %v, want the server certificate", f, pair.Leaf)
			}
			if pair.PrivateKey == nil {
				t.Errorf("%s: no private key", f)
			}
			want := 1
			if f == chainFile {
				want = 2
			}
			if len(pair.Certificate) != want {
				t.Errorf("%s: %d certificates in chain, want %d", f, len(pair.Certificate), want)
			}
		}
	})

	tests := []struct {
		name      string
		cert, key string
		mention   []string
		is        error
	}{
		{"mismatched key", certFile, otherKey, []string{certFile, otherKey}, nil},
		{"garbage key", certFile, garbageKey, []string{certFile, garbageKey}, nil},
		{"garbage cert", garbage, keyFile, []string{garbage}, certs.ErrNoCertificate},
		{"key swapped for cert", keyFile, keyFile, []string{keyFile}, certs.ErrNoCertificate},
		{"missing cert", missing, keyFile, []string{missing}, fs.ErrNotExist},
		{"missing key", certFile, missing, []string{missing}, fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := certs.LoadKeyPair(tt.cert, tt.key)
			if err == nil {
				t.Fatal("LoadKeyPair succeeded")
			}
			for _, m := range tt.mention {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %s", err, m)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
		})
	}
}

func TestSelfSigned(t *testing.T) {
	t.Parallel()
	pair, err := certs.SelfSigned("localhost", "127.0.0.1", "::1", "origin.example.test")
	if err != nil {
		t.Fatal(err)
	}
	leaf := pair.Leaf
	if leaf == nil || len(pair.Certificate) != 1 {
		t.Fatalf("Leaf = %v, %d certificates; want a one-certificate chain with Leaf set", leaf, len(pair.Certificate))
	}
	if !bytes.Equal(leaf.Raw, pair.Certificate[0]) {
		t.Error("Leaf is not Certificate[0]")
	}
	if got, want := strings.Join(leaf.DNSNames, ","), "localhost,origin.example.test"; got != want {
		t.Errorf("DNS SANs = %s, want %s", got, want)
	}
	wantIPs := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	if len(leaf.IPAddresses) != len(wantIPs) {
		t.Fatalf("IP SANs = %v, want %v", leaf.IPAddresses, wantIPs)
	}
	for i, ip := range wantIPs {
		if !leaf.IPAddresses[i].Equal(ip) {
			t.Errorf("IP SAN %d = %v, want %v", i, leaf.IPAddresses[i], ip)
		}
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		t.Fatalf("private key is %T, want ECDSA P-256", pair.PrivateKey)
	}
	if !key.PublicKey.Equal(leaf.PublicKey) {
		t.Error("private key does not match the certificate")
	}
	now := time.Now()
	if !leaf.NotBefore.Before(now) || leaf.NotAfter.Before(now.Add(364*24*time.Hour)) {
		t.Errorf("validity %v..%v, want about a year from now", leaf.NotBefore, leaf.NotAfter)
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	for _, name := range []string{"127.0.0.1", "::1", "localhost", "origin.example.test"} {
		_, err := leaf.Verify(x509.VerifyOptions{
			DNSName:   name,
			Roots:     roots,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			t.Errorf("does not verify as a server certificate for %s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "other.example.test", Roots: roots}); err == nil {
		t.Error("verifies for a name it was not issued for")
	}

	// Each call makes a fresh key and serial.
	again, err := certs.SelfSigned("localhost")
	if err != nil {
		t.Fatal(err)
	}
	if again.Leaf.SerialNumber.Cmp(leaf.SerialNumber) == 0 || again.Leaf.PublicKey.(*ecdsa.PublicKey).Equal(leaf.PublicKey) {
		t.Error("two SelfSigned calls share a serial or a key")
	}
}
