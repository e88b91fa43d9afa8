package certs

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
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Defaults for IssueOptions.
const (
	// DefaultCADays is how long a private AOP CA is valid: ten years, so
	// that rotating it is a rare, planned event.
	DefaultCADays = 3650
	// DefaultClientDays is how long a client certificate is valid: a year.
	// Cloudflare alerts 30 and 14 days before an AOP certificate expires.
	DefaultClientDays = 365
	// DefaultRSABits is the RSA key size when KeyRSA is chosen.
	DefaultRSABits = 2048
)

// KeyType selects the private key algorithm of an issued certificate.
type KeyType string

const (
	// KeyECDSA is an ECDSA P-256 key, the default: small, fast, and
	// accepted by Cloudflare and every common origin server.
	KeyECDSA KeyType = "ecdsa"
	// KeyRSA is an RSA key of IssueOptions.RSABits bits.
	KeyRSA KeyType = "rsa"
	// KeyMLDSA44, KeyMLDSA65 and KeyMLDSA87 are post-quantum ML-DSA keys
	// (FIPS 204). They sign TLS 1.3 handshakes only, and are written as
	// seed-only PKCS#8, the form Cloudflare's upload expects.
	KeyMLDSA44 KeyType = "ml-dsa-44"
	KeyMLDSA65 KeyType = "ml-dsa-65"
	KeyMLDSA87 KeyType = "ml-dsa-87"
)

// KeyTypes lists every KeyType, the default first.
var KeyTypes = []KeyType{KeyECDSA, KeyRSA, KeyMLDSA44, KeyMLDSA65, KeyMLDSA87}

// ParseKeyType parses one of KeyTypes, case-insensitively.
func ParseKeyType(s string) (KeyType, error) {
	for _, k := range KeyTypes {
		if KeyType(strings.ToLower(s)) == k {
			return k, nil
		}
	}
	return "", fmt.Errorf("%q is not one of %s", s, keyTypeList())
}

func keyTypeList() string {
	names := make([]string, len(KeyTypes))
	for i, k := range KeyTypes {
		names[i] = string(k)
	}
	return strings.Join(names, ", ")
}

// mldsaParams returns the ML-DSA parameter set of k, if it is one.
func mldsaParams(k KeyType) (mldsa.Parameters, bool) {
	switch k {
	case KeyMLDSA44:
		return mldsa.MLDSA44(), true
	case KeyMLDSA65:
		return mldsa.MLDSA65(), true
	case KeyMLDSA87:
		return mldsa.MLDSA87(), true
	}
	return mldsa.Parameters{}, false
}

// IssueOptions shape a certificate made by NewCA or IssueClient.
type IssueOptions struct {
	// CommonName is the subject CN; required.
	CommonName string
	// Days is the validity period counted from Now; zero selects
	// DefaultCADays or DefaultClientDays.
	Days int
	// Key is the key algorithm; "" selects KeyECDSA.
	Key KeyType
	// RSABits is the RSA key size (2048, 3072 or 4096); zero selects
	// DefaultRSABits. Ignored for ECDSA.
	RSABits int
	// Now is the issuance time; zero means time.Now(). The certificate is
	// valid from five minutes before it, to absorb clock skew.
	Now time.Time
}

// Issued is a certificate together with its private key.
type Issued struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// CertPEM returns the certificate as a PEM CERTIFICATE block.
func (i *Issued) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: i.Cert.Raw})
}

// KeyPEM returns the private key as an unencrypted PKCS#8 "PRIVATE KEY"
// block, the format openssl 3 writes and Cloudflare, nginx, Apache and
// aopguard all read. An ML-DSA key is written in its seed-only form (the
// 32-byte seed, RFC 9881), from which the whole key is derived.
func (i *Issued) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(i.Key)
	if err != nil {
		return nil, fmt.Errorf("encoding private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// NewCA makes a self-signed private CA for Authenticated Origin Pulls: the
// CA an origin trusts (aopguard's zone_ca or hosts[].ca, nginx's
// ssl_client_certificate) and that issues the client certificates uploaded
// to Cloudflare. It is CA:TRUE with path length 0 (it signs leaves only)
// and may sign certificates and CRLs.
func NewCA(o IssueOptions) (*Issued, error) {
	if o.Days == 0 {
		o.Days = DefaultCADays
	}
	tmpl, key, err := template(o)
	if err != nil {
		return nil, err
	}
	tmpl.IsCA = true
	tmpl.MaxPathLenZero = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	return sign(tmpl, key, tmpl, key)
}

// IssueClient issues a client certificate under ca: a leaf (CA:FALSE) with
// the clientAuth extended key usage, which is what Cloudflare accepts for
// upload and what origins verify. When the common name is a host name it
// is also put in the subjectAltName. The certificate may not outlive ca.
func IssueClient(ca *Issued, o IssueOptions) (*Issued, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("issuing client certificate: no CA")
	}
	if err := checkIssuer(ca); err != nil {
		return nil, fmt.Errorf("issuing client certificate: %w", err)
	}
	if o.Days == 0 {
		o.Days = DefaultClientDays
	}
	tmpl, key, err := template(o)
	if err != nil {
		return nil, err
	}
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("issuing client certificate: %d days would outlive the CA %q, which expires %s; use fewer --days or a newer CA",
			o.Days, Describe(ca.Cert), ca.Cert.NotAfter.UTC().Format(time.DateOnly))
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	if _, ok := key.(*rsa.PrivateKey); ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if isHostName(o.CommonName) {
		tmpl.DNSNames = []string{o.CommonName}
	}
	return sign(tmpl, key, ca.Cert, ca.Key)
}

// checkIssuer makes sure ca can sign certificates that verify.
func checkIssuer(ca *Issued) error {
	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid {
		return fmt.Errorf("%q is not a CA certificate (CA:FALSE)", Describe(c))
	}
	if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("%q may not sign certificates (no keyCertSign key usage)", Describe(c))
	}
	if !publicKeyMatches(c, ca.Key) {
		return fmt.Errorf("the private key does not belong to %q", Describe(c))
	}
	return nil
}

func publicKeyMatches(c *x509.Certificate, key crypto.Signer) bool {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(c.PublicKey)
}

func template(o IssueOptions) (*x509.Certificate, crypto.Signer, error) {
	if strings.TrimSpace(o.CommonName) == "" {
		return nil, nil, errors.New("a common name is required")
	}
	if o.Days < 0 {
		return nil, nil, fmt.Errorf("validity of %d days: must be positive", o.Days)
	}
	if o.Days > 100*365 {
		return nil, nil, fmt.Errorf("validity of %d days: more than a century is surely a mistake", o.Days)
	}
	key, err := generateKey(o)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("generating serial number: %w", err)
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	now = now.UTC().Truncate(time.Second)
	return &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)), // never zero
		Subject:               pkix.Name{CommonName: o.CommonName},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(time.Duration(o.Days) * 24 * time.Hour),
		BasicConstraintsValid: true,
	}, key, nil
}

func generateKey(o IssueOptions) (crypto.Signer, error) {
	switch o.Key {
	case "", KeyECDSA:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generating ECDSA P-256 key: %w", err)
		}
		return k, nil
	case KeyRSA:
		bits := o.RSABits
		if bits == 0 {
			bits = DefaultRSABits
		}
		if bits != 2048 && bits != 3072 && bits != 4096 {
			return nil, fmt.Errorf("RSA key size %d: want 2048, 3072 or 4096", bits)
		}
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			return nil, fmt.Errorf("generating RSA-%d key: %w", bits, err)
		}
		return k, nil
	}
	if params, ok := mldsaParams(o.Key); ok {
		k, err := mldsa.GenerateKey(params)
		if err != nil {
			return nil, fmt.Errorf("generating %s key: %w", params, err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("key type %q: want one of %s", o.Key, keyTypeList())
}

func sign(tmpl *x509.Certificate, key crypto.Signer, parent *x509.Certificate, parentKey crypto.Signer) (*Issued, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, fmt.Errorf("signing certificate for %q: %w", tmpl.Subject.CommonName, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the certificate just made: %w", err)
	}
	return &Issued{Cert: c, Key: key}, nil
}

// isHostName reports whether s looks like a DNS name (possibly a "*."
// wildcard), so that it belongs in a subjectAltName.
func isHostName(s string) bool {
	s = strings.TrimPrefix(s, "*.")
	if s == "" || len(s) > 253 || !strings.Contains(s, ".") {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// PairPaths returns the certificate and key file names for a --out or --ca
// base name: "ca" gives ca.pem and ca.key; a trailing ".pem" or ".key" on
// base is ignored, so "ca.pem" names the same pair.
func PairPaths(base string) (certFile, keyFile string) {
	base = strings.TrimSuffix(strings.TrimSuffix(base, ".pem"), ".key")
	return base + ".pem", base + ".key"
}

// LoadIssuer reads a CA certificate and its private key (as written by
// WritePair) and checks that it can issue certificates.
func LoadIssuer(certFile, keyFile string) (*Issued, error) {
	pair, err := LoadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: unsupported private key type %T", keyFile, pair.PrivateKey)
	}
	ca := &Issued{Cert: pair.Leaf, Key: key}
	if err := checkIssuer(ca); err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	return ca, nil
}

// ErrExists reports an output file that already exists; WritePair
// overwrites only when told to.
var ErrExists = errors.New("already exists (use --force to overwrite)")

// WritePair writes i to certFile (mode 0644) and keyFile (mode 0600). Unless
// force is set it refuses, before writing anything, when either file
// exists. With force, each file is replaced atomically and the key gets
// mode 0600 whatever the old file's mode was.
func WritePair(i *Issued, certFile, keyFile string, force bool) error {
	keyPEM, err := i.KeyPEM()
	if err != nil {
		return err
	}
	if !force {
		for _, f := range []string{certFile, keyFile} {
			if _, err := os.Lstat(f); err == nil {
				return fmt.Errorf("%s: %w", f, ErrExists)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("checking %s: %w", f, err)
			}
		}
	}
	if err := writeFile(keyFile, keyPEM, 0o600, force); err != nil {
		return err
	}
	if err := writeFile(certFile, i.CertPEM(), 0o644, force); err != nil {
		if !force {
			os.Remove(keyFile) // do not leave a key without its certificate
		}
		return err
	}
	return nil
}

// writeFile creates name exclusively, or with replace writes a temporary
// file next to it and renames it over name.
func writeFile(name string, data []byte, perm fs.FileMode, replace bool) (err error) {
	if !replace {
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%s: %w", name, ErrExists)
			}
			return fmt.Errorf("creating %s: %w", name, err)
		}
		if _, err := f.Write(data); err != nil {
			f.Close()
			os.Remove(name)
			return fmt.Errorf("writing %s: %w", name, err)
		}
		if err := f.Close(); err != nil {
			os.Remove(name)
			return fmt.Errorf("writing %s: %w", name, err)
		}
		return nil
	}
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp*")
	if err != nil {
		return fmt.Errorf("creating %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("creating %s: %w", name, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := os.Rename(f.Name(), name); err != nil {
		return fmt.Errorf("replacing %s: %w", name, err)
	}
	return nil
}

// TLSCertificate returns i as a tls.Certificate, for presenting it in a
// handshake.
func (i *Issued) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{i.Cert.Raw}, PrivateKey: i.Key, Leaf: i.Cert}
}
