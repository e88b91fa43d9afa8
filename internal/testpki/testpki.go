// Package testpki builds throwaway certificate authorities and leaves in
// memory for tests: the Cloudflare-like origin-pull CA, customer CAs, client
// leaves with and without the clientAuth usage, expired and not-yet-valid
// leaves, and server certificates; with ECDSA, RSA or post-quantum ML-DSA
// keys. Nothing here is for production use.
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/mldsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// Cert is a certificate with its key.
type Cert struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// Options shape a certificate; the zero value is a one-day ECDSA client leaf.
type Options struct {
	CN        string
	DNS       []string
	IPs       []net.IP
	NotBefore time.Time // zero: an hour ago
	NotAfter  time.Time // zero: a day from now
	IsCA      bool
	EKU       []x509.ExtKeyUsage // nil: clientAuth for leaves, none for CAs
	NoEKU     bool               // leave the EKU extension out entirely
	RSABits   int                // 0: ECDSA P-256
	// MLDSA is 44, 65 or 87 for an ML-DSA key of that parameter set
	// (FIPS 204); it takes precedence over RSABits.
	MLDSA int
}

// MLDSAParams returns the ML-DSA parameter set for 44, 65 or 87.
func MLDSAParams(level int) (mldsa.Parameters, bool) {
	switch level {
	case 44:
		return mldsa.MLDSA44(), true
	case 65:
		return mldsa.MLDSA65(), true
	case 87:
		return mldsa.MLDSA87(), true
	}
	return mldsa.Parameters{}, false
}

var serial atomic.Int64

// New issues a certificate under parent (nil: self-signed).
func New(t testing.TB, parent *Cert, o Options) *Cert {
	t.Helper()
	var key crypto.Signer
	var err error
	if o.MLDSA != 0 {
		params, ok := MLDSAParams(o.MLDSA)
		if !ok {
			t.Fatalf("testpki: ML-DSA level %d: want 44, 65 or 87", o.MLDSA)
		}
		key, err = mldsa.GenerateKey(params)
	} else if o.RSABits > 0 {
		key, err = rsa.GenerateKey(rand.Reader, o.RSABits)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if o.NotBefore.IsZero() {
		o.NotBefore = now.Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = now.Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1) + 1000),
		Subject:               pkix.Name{CommonName: o.CN, Organization: []string{"aopguard tests"}},
		NotBefore:             o.NotBefore,
		NotAfter:              o.NotAfter,
		DNSNames:              o.DNS,
		IPAddresses:           o.IPs,
		BasicConstraintsValid: true,
		IsCA:                  o.IsCA,
	}
	if o.IsCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		if o.MLDSA == 0 {
			tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
		}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	if o.EKU != nil {
		tmpl.ExtKeyUsage = o.EKU
	}
	if o.NoEKU {
		tmpl.ExtKeyUsage = nil
	}
	signer, signerCert := key, tmpl
	if parent != nil {
		signer, signerCert = parent.Key, parent.Cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &Cert{Cert: c, Key: key}
}

// CA makes a self-signed certificate authority.
func CA(t testing.TB, cn string) *Cert {
	return New(t, nil, Options{CN: cn, IsCA: true, NotAfter: time.Now().Add(365 * 24 * time.Hour)})
}

// MLDSACA makes a self-signed ML-DSA certificate authority; level is 44,
// 65 or 87.
func MLDSACA(t testing.TB, cn string, level int) *Cert {
	return New(t, nil, Options{CN: cn, IsCA: true, NotAfter: time.Now().Add(365 * 24 * time.Hour), MLDSA: level})
}

// MLDSAClient issues a clientAuth leaf with an ML-DSA key under ca (which
// may itself be classical or post-quantum).
func MLDSAClient(t testing.TB, ca *Cert, cn string, level int) *Cert {
	return New(t, ca, Options{CN: cn, MLDSA: level})
}

// Intermediate issues a CA certificate under parent; level 0 gives it an
// ECDSA key, 44, 65 or 87 an ML-DSA one.
func Intermediate(t testing.TB, parent *Cert, cn string, level int) *Cert {
	return New(t, parent, Options{CN: cn, IsCA: true, NotAfter: time.Now().Add(300 * 24 * time.Hour), MLDSA: level})
}

// Client issues a clientAuth leaf under ca.
func Client(t testing.TB, ca *Cert, cn string) *Cert {
	return New(t, ca, Options{CN: cn})
}

// Server issues a serverAuth leaf for names (DNS names or IP addresses).
func Server(t testing.TB, ca *Cert, names ...string) *Cert {
	o := Options{CN: names[0], EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			o.IPs = append(o.IPs, ip)
		} else {
			o.DNS = append(o.DNS, n)
		}
	}
	return New(t, ca, o)
}

// CertPEM returns the certificate as PEM.
func (c *Cert) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw})
}

// KeyPEM returns the private key as PKCS#8 PEM.
func (c *Cert) KeyPEM() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// TLS returns a tls.Certificate presenting c followed by chain.
func (c *Cert) TLS(chain ...*Cert) tls.Certificate {
	out := tls.Certificate{Certificate: [][]byte{c.Cert.Raw}, PrivateKey: c.Key, Leaf: c.Cert}
	for _, x := range chain {
		out.Certificate = append(out.Certificate, x.Cert.Raw)
	}
	return out
}

// Pool returns a pool holding the given certificates.
func Pool(cs ...*Cert) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range cs {
		p.AddCert(c.Cert)
	}
	return p
}

// WriteFile writes data to dir/name and returns the path.
func WriteFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Bundle concatenates the PEM of several certificates.
func Bundle(cs ...*Cert) []byte {
	var out []byte
	for _, c := range cs {
		out = append(out, c.CertPEM()...)
	}
	return out
}
