package certs_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aopguard/aopguard/certs"
	"github.com/aopguard/aopguard/internal/testpki"
)

// ecParamsAndKey returns what "openssl ecparam -name prime256v1 -genkey"
// writes: an EC PARAMETERS block, then the SEC1 EC PRIVATE KEY; and the key.
func ecParamsAndKey(t *testing.T) ([]byte, []byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	params, err := asn1.Marshal(asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7})
	if err != nil {
		t.Fatal(err)
	}
	sec1, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyBlock := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})
	return append(pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: params}), keyBlock...), keyBlock, key
}

// certFor issues a client certificate for key under ca.
func certFor(t *testing.T, ca *testpki.Cert, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: testpki.Client(t, ca, "serial source").Cert.SerialNumber,
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * 24 * time.Hour),
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	tmpl.Subject.CommonName = "app.example.com"
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// roundTrip marshals the body the way the command prints it and parses
// it back with a JSON parser.
func roundTrip(t *testing.T, body any) (map[string]string, []byte) {
	t.Helper()
	raw, err := certs.MarshalBody(body)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(raw, []byte("\n")) != 1 || raw[len(raw)-1] != '\n' {
		t.Errorf("body is not one line of JSON:\n%s", raw)
	}
	var m map[string]string
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, raw)
	}
	return m, raw
}

func TestUploadBodyRoundTrip(t *testing.T) {
	t.Parallel()
	ca := testpki.CA(t, "Example AOP CA")
	later := time.Now().Add(90 * 24 * time.Hour)
	leaf := testpki.New(t, ca, testpki.Options{CN: "app.example.com", NotAfter: later})
	rsaLeaf := testpki.New(t, ca, testpki.Options{CN: "rsa.example.com", RSABits: 2048, NotAfter: later})
	paramsKey, bareKey, ecKey := ecParamsAndKey(t)
	ecCert := certFor(t, ca, ecKey)
	crlf := func(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")) }

	cases := []struct {
		name               string
		certIn, keyIn      []byte
		wantCert, wantKey  []byte
		wantWarningContain string
	}{
		{"PKCS#8 ECDSA", leaf.CertPEM(), leaf.KeyPEM(), leaf.CertPEM(), leaf.KeyPEM(), ""},
		{"RSA", rsaLeaf.CertPEM(), rsaLeaf.KeyPEM(), rsaLeaf.CertPEM(), rsaLeaf.KeyPEM(), ""},
		{"openssl ecparam key: EC PARAMETERS dropped", ecCert, paramsKey, ecCert, bareKey, ""},
		{"EC PARAMETERS in the certificate file too", append(append([]byte{}, paramsKey[:bytes.Index(paramsKey, []byte("-----BEGIN EC PRIVATE"))]...), ecCert...), paramsKey, ecCert, bareKey, ""},
		{"CRLF line endings", crlf(leaf.CertPEM()), crlf(leaf.KeyPEM()), leaf.CertPEM(), leaf.KeyPEM(), ""},
		{"chain kept, leaf first", testpki.Bundle(leaf, ca), leaf.KeyPEM(), testpki.Bundle(leaf, ca), leaf.KeyPEM(), ""},
		{"combined cert+key file", append(leaf.CertPEM(), leaf.KeyPEM()...), leaf.KeyPEM(), leaf.CertPEM(), leaf.KeyPEM(), "ignored a PRIVATE KEY block"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body, warnings, err := certs.NewUploadBody(tc.certIn, tc.keyIn, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			m, raw := roundTrip(t, body)
			if len(m) != 2 {
				t.Errorf("body has keys %v, want certificate and private_key", m)
			}
			if m["certificate"] != string(tc.wantCert) {
				t.Errorf("certificate after the JSON round trip:\n%s\nwant:\n%s", m["certificate"], tc.wantCert)
			}
			if m["private_key"] != string(tc.wantKey) {
				t.Errorf("private_key after the JSON round trip:\n%s\nwant:\n%s", m["private_key"], tc.wantKey)
			}
			if bytes.Contains(raw, []byte("EC PARAMETERS")) || bytes.Contains(raw, []byte(`\r`)) {
				t.Errorf("body keeps EC PARAMETERS or CR:\n%s", raw)
			}
			if !bytes.Contains(raw, []byte(`-----BEGIN CERTIFICATE-----\n`)) {
				t.Errorf("newlines are not escaped as \\n:\n%s", raw)
			}
			joined := strings.Join(warnings, "\n")
			if tc.wantWarningContain == "" && len(warnings) > 0 || !strings.Contains(joined, tc.wantWarningContain) {
				t.Errorf("warnings %q, want %q", warnings, tc.wantWarningContain)
			}
		})
	}
}

func TestUploadBodyRefusals(t *testing.T) {
	t.Parallel()
	ca := testpki.CA(t, "Example AOP CA")
	leaf := testpki.Client(t, ca, "app.example.com")
	other := testpki.Client(t, ca, "other")
	server := testpki.Server(t, ca, "origin.example.com")
	expired := testpki.New(t, ca, testpki.Options{CN: "old", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	soon := testpki.New(t, ca, testpki.Options{CN: "soon", NotAfter: time.Now().Add(5 * 24 * time.Hour)})
	encrypted := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}})
	legacyEncrypted := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: []byte{1}})

	cases := []struct {
		name          string
		certIn, keyIn []byte
		want          string
		wantIs        error
	}{
		{"key of another certificate", leaf.CertPEM(), other.KeyPEM(), "do not go together", nil},
		{"CA certificate", ca.CertPEM(), ca.KeyPEM(), "only a leaf", certs.ErrCACertificate},
		{"server certificate", server.CertPEM(), server.KeyPEM(), "does not allow client authentication (extended key usage serverAuth)", nil},
		{"expired", expired.CertPEM(), expired.KeyPEM(), "expired on", nil},
		{"encrypted PKCS#8 key", leaf.CertPEM(), encrypted, "encrypted", nil},
		{"encrypted legacy key", leaf.CertPEM(), legacyEncrypted, "encrypted", nil},
		{"no certificate", leaf.KeyPEM(), leaf.KeyPEM(), "no certificate found", certs.ErrNoCertificate},
		{"no key", leaf.CertPEM(), leaf.CertPEM(), "no private key found", nil},
		{"two keys", leaf.CertPEM(), append(leaf.KeyPEM(), other.KeyPEM()...), "2 private keys", nil},
		{"garbage after the certificate", append(leaf.CertPEM(), "-----BEGIN CERT"...), leaf.KeyPEM(), "unparseable", nil},
		{"unexpected block", append(leaf.CertPEM(), pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: []byte{1}})...), leaf.KeyPEM(), `unexpected PEM block "X509 CRL"`, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := certs.NewUploadBody(tc.certIn, tc.keyIn, time.Now())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("err = %v, want errors.Is %v", err, tc.wantIs)
			}
		})
	}

	_, warnings, err := certs.NewUploadBody(soon.CertPEM(), soon.KeyPEM(), time.Now())
	if err != nil || len(warnings) != 1 || !strings.Contains(warnings[0], "expires in 4 days") {
		t.Errorf("certificate expiring in 5 days: warnings %q, err %v; want one expiry warning", warnings, err)
	}
}

func TestHostnamesBody(t *testing.T) {
	t.Parallel()
	body, err := certs.NewHostnamesBody([]string{"app.example.com", " other.example.com"}, " 2458ce5a-0c35-4c7f-82c7-8e9487d3ff60", true)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := certs.MarshalBody(body)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"config":[{"hostname":"app.example.com","cert_id":"2458ce5a-0c35-4c7f-82c7-8e9487d3ff60","enabled":true},` +
		`{"hostname":"other.example.com","cert_id":"2458ce5a-0c35-4c7f-82c7-8e9487d3ff60","enabled":true}]}` + "\n"
	if string(raw) != want {
		t.Errorf("body:\n%s\nwant:\n%s", raw, want)
	}
	off, err := certs.NewHostnamesBody([]string{"app.example.com"}, "id", false)
	if err != nil || off.Config[0].Enabled {
		t.Errorf("disable body: %+v, %v", off, err)
	}

	for _, tc := range []struct {
		name  string
		hosts []string
		id    string
		want  string
	}{
		{"no id", []string{"app.example.com"}, " ", "certificate id is required"},
		{"no hosts", nil, "id", "at least one hostname"},
		{"duplicate", []string{"app.example.com", "APP.example.com"}, "id", "given twice"},
		{"not a name", []string{"https://app.example.com"}, "id", "not a host name"},
		{"empty name", []string{"app.example.com", ""}, "id", "not a host name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := certs.NewHostnamesBody(tc.hosts, tc.id, true); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// mldsaKeyForm re-encodes a seed-only ML-DSA PKCS#8 key in another form of
// RFC 9881: "both" (seed and expanded key, OpenSSL 3.5's default) or
// "expanded" (the expanded key alone). The expanded bytes are filler of the
// right size: crypto/mldsa cannot compute them, and the converter only
// keeps the seed.
func mldsaKeyForm(t *testing.T, seedOnlyPEM []byte, form string, expandedSize int) []byte {
	t.Helper()
	b, _ := pem.Decode(seedOnlyPEM)
	var k struct {
		Version    int
		Algo       asn1.RawValue
		PrivateKey []byte
	}
	if _, err := asn1.Unmarshal(b.Bytes, &k); err != nil {
		t.Fatal(err)
	}
	seed := k.PrivateKey[2:]
	expanded := bytes.Repeat([]byte{0x5a}, expandedSize)
	var err error
	switch form {
	case "both":
		k.PrivateKey, err = asn1.Marshal(struct{ Seed, Expanded []byte }{seed, expanded})
	case "expanded":
		k.PrivateKey, err = asn1.Marshal(expanded)
	}
	if err != nil {
		t.Fatal(err)
	}
	der, err := asn1.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func TestUploadBodyMLDSA(t *testing.T) {
	t.Parallel()
	now := time.Now()
	ca := testpki.MLDSACA(t, "PQ AOP CA", 65)
	leaf := testpki.MLDSAClient(t, ca, "app.example.com", 65)
	seedOnly := leaf.KeyPEM()
	tests := []struct {
		name    string
		key     []byte
		wantErr string
		warn    bool
	}{
		{"seed-only", seedOnly, "", false},
		{"both forms: converted to seed-only", mldsaKeyForm(t, seedOnly, "both", 4032), "", true},
		{"expanded only", mldsaKeyForm(t, seedOnly, "expanded", 4032), "holds only its expanded form", false},
		{"both, wrong expanded size", mldsaKeyForm(t, seedOnly, "both", 100), "none of the seed, expanded or both forms", false},
		{"another key's seed", testpki.MLDSAClient(t, ca, "other", 65).KeyPEM(), "do not go together", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, warnings, err := certs.NewUploadBody(leaf.CertPEM(), tt.key, now)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if body.PrivateKey != string(seedOnly) {
				t.Errorf("upload key is not the seed-only form:\n%s", body.PrivateKey)
			}
			if got := len(warnings) > 0 && strings.Contains(warnings[0], "seed-only"); got != tt.warn {
				t.Errorf("warnings %q", warnings)
			}
		})
	}
}
