// Package certs owns certificate material: PEM bundles read from disk, the
// origin's server key pairs, a throwaway self-signed certificate for first
// runs, and Cloudflare's shared origin-pull CA, which is embedded so that the
// common zone-level setup needs no file at all.
package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	_ "embed"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"
)

//go:embed cloudflare_origin_pull_ca.pem
var cloudflarePEM []byte

// cloudflareCA is parsed once at start-up; a broken embed is a build bug,
// caught by the package tests, so a panic here is the right failure.
var cloudflareCA = func() *x509.Certificate {
	cs, err := ParseBundle(cloudflarePEM)
	if err != nil || len(cs) != 1 {
		panic(fmt.Sprintf("certs: embedded Cloudflare origin-pull CA is unusable: %v", err))
	}
	return cs[0]
}()

// CloudflareOriginPullCA returns Cloudflare's shared origin-pull CA
// (CN=origin-pull.cloudflare.net), the issuer of the client certificate that
// Cloudflare presents for zone-level Authenticated Origin Pulls. Every
// Cloudflare account shares it, so it proves "this came through Cloudflare",
// not "this came through my zone". The returned certificate must not be
// modified.
func CloudflareOriginPullCA() *x509.Certificate { return cloudflareCA }

// CloudflareOriginPullPEM returns the embedded CA as PEM, for users who want
// to inspect or install it elsewhere.
func CloudflareOriginPullPEM() []byte { return bytes.Clone(cloudflarePEM) }

// ErrNoCertificate reports a PEM input with no CERTIFICATE block in it.
var ErrNoCertificate = errors.New("no certificate found")

// ParseBundle parses every CERTIFICATE block in data. Other PEM blocks (a
// stray private key, EC PARAMETERS) are skipped, but anything that is not PEM
// at all is an error: a half-written or truncated file must never be mistaken
// for a smaller bundle.
func ParseBundle(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := data
	for n := 1; ; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		out = append(out, c)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		if len(out) == 0 {
			return nil, ErrNoCertificate
		}
		return nil, fmt.Errorf("unparseable data after certificate %d (truncated or not PEM)", len(out))
	}
	if len(out) == 0 {
		return nil, ErrNoCertificate
	}
	return out, nil
}

// LoadBundle reads and parses a PEM CA bundle. The error names the file.
func LoadBundle(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cs, err := ParseBundle(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cs, nil
}

// LoadKeyPair reads a server certificate chain and its private key and
// checks that they belong together. The returned certificate has Leaf set.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	if _, err := ParseBundle(certPEM); err != nil {
		return tls.Certificate{}, fmt.Errorf("%s: %w", certFile, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s with %s: %w", certFile, keyFile, err)
	}
	return pair, nil
}

// SelfSigned makes a throwaway ECDSA P-256 server certificate for names (DNS
// names or IP addresses), valid for a year. It lets aopguard start on a
// fresh machine; real deployments configure a certificate Cloudflare trusts.
func SelfSigned(names ...string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generating self-signed key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generating serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "aopguard self-signed", Organization: []string{"aopguard"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("creating self-signed certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// Fingerprint returns the lowercase hex SHA-256 of a certificate's DER, the
// form sent upstream in X-Client-Cert-Fingerprint.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// Describe returns a certificate's subject for logs and metric labels: the
// common name when there is one, else the full distinguished name.
func Describe(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return c.Subject.CommonName
	}
	return c.Subject.String()
}
