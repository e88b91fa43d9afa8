package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/mldsa"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// CloudflareRelation says how a certificate relates to Cloudflare's shared
// origin-pull CA.
type CloudflareRelation uint8

const (
	// NotCloudflare: the certificate does not chain to the origin-pull CA.
	NotCloudflare CloudflareRelation = iota
	// IsCloudflareCA: the certificate is the origin-pull CA itself.
	IsCloudflareCA
	// IssuedByCloudflare: the certificate chains to the origin-pull CA
	// (directly or through intermediates given alongside it), as the
	// client certificate of zone-level AOP does.
	IssuedByCloudflare
)

func (r CloudflareRelation) String() string {
	switch r {
	case IsCloudflareCA:
		return "is_cloudflare_ca"
	case IssuedByCloudflare:
		return "chains_to_cloudflare"
	}
	return "not_cloudflare"
}

// Info is what "aopguard certs inspect" reports about one certificate.
type Info struct {
	Subject    string
	Issuer     string
	SelfSigned bool
	// SANs are the subjectAltNames as DNS:, IP:, email: and URI: entries.
	SANs []string
	// KeyType is e.g. "ECDSA P-256", "RSA 2048", "Ed25519" or
	// "ML-DSA-65 (post-quantum)".
	KeyType string
	// Signature is the algorithm of the issuer's signature on the
	// certificate, e.g. "ECDSA-SHA256" or "ML-DSA-65 (post-quantum)".
	Signature string
	NotBefore time.Time
	NotAfter  time.Time
	// DaysLeft is the number of whole days until NotAfter; negative once
	// the certificate has expired.
	DaysLeft int
	// Fingerprint is the lowercase hex SHA-256 of the DER, as in
	// aopguard's X-Client-Cert-Fingerprint header and logs.
	Fingerprint string
	IsCA        bool
	// MaxPathLen is the CA's path length constraint, -1 when none.
	MaxPathLen  int
	KeyUsage    []string
	ExtKeyUsage []string
	Cloudflare  CloudflareRelation
	// Notes flag problems: expiry, a leaf without clientAuth, a CA that
	// may not sign certificates.
	Notes []string
}

// Inspect describes c at time now. others are the certificates found
// alongside it (the rest of a bundle), used as intermediates when deciding
// whether c chains to Cloudflare's origin-pull CA.
func Inspect(c *x509.Certificate, others []*x509.Certificate, now time.Time) Info {
	i := Info{
		Subject:     dn(c.Subject.String()),
		Issuer:      dn(c.Issuer.String()),
		SelfSigned:  bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil,
		KeyType:     KeyDescription(c.PublicKey),
		Signature:   SignatureDescription(c.SignatureAlgorithm),
		NotBefore:   c.NotBefore,
		NotAfter:    c.NotAfter,
		DaysLeft:    int(math.Floor(c.NotAfter.Sub(now).Hours() / 24)),
		Fingerprint: Fingerprint(c.Raw),
		IsCA:        c.IsCA,
		MaxPathLen:  -1,
		KeyUsage:    KeyUsageNames(c.KeyUsage),
		ExtKeyUsage: ExtKeyUsageNames(c.ExtKeyUsage),
	}
	for _, n := range c.DNSNames {
		i.SANs = append(i.SANs, "DNS:"+n)
	}
	for _, ip := range c.IPAddresses {
		i.SANs = append(i.SANs, "IP:"+ip.String())
	}
	for _, e := range c.EmailAddresses {
		i.SANs = append(i.SANs, "email:"+e)
	}
	for _, u := range c.URIs {
		i.SANs = append(i.SANs, "URI:"+u.String())
	}
	if c.IsCA && (c.MaxPathLen > 0 || c.MaxPathLenZero) {
		i.MaxPathLen = c.MaxPathLen
	}
	cf := CloudflareOriginPullCA()
	switch {
	case c.Equal(cf):
		i.Cloudflare = IsCloudflareCA
	case chainsTo(c, cf, others, 4):
		i.Cloudflare = IssuedByCloudflare
	}
	switch {
	case now.After(c.NotAfter):
		i.Notes = append(i.Notes, fmt.Sprintf("EXPIRED %d days ago", -i.DaysLeft))
	case now.Before(c.NotBefore):
		i.Notes = append(i.Notes, "NOT YET VALID")
	case i.DaysLeft < 30:
		i.Notes = append(i.Notes, fmt.Sprintf("expires in %d days: renew it (Cloudflare alerts at 30 and 14 days)", i.DaysLeft))
	}
	if c.IsCA && c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0 {
		i.Notes = append(i.Notes, "CA without the keyCertSign key usage: certificates it signs will not verify")
	}
	if !c.IsCA && len(c.ExtKeyUsage) > 0 && !hasEKU(c, x509.ExtKeyUsageClientAuth) && !hasEKU(c, x509.ExtKeyUsageAny) {
		i.Notes = append(i.Notes, "no clientAuth extended key usage: origins refuse it as a client certificate")
	}
	return i
}

func hasEKU(c *x509.Certificate, u x509.ExtKeyUsage) bool {
	for _, e := range c.ExtKeyUsage {
		if e == u {
			return true
		}
	}
	return false
}

// chainsTo reports whether c's signature chain, through intermediates
// taken from others (at most depth of them), ends at root. Validity
// periods are deliberately ignored: this answers "who issued it", and
// Info reports expiry separately.
func chainsTo(c, root *x509.Certificate, others []*x509.Certificate, depth int) bool {
	if bytes.Equal(c.RawIssuer, root.RawSubject) && c.CheckSignatureFrom(root) == nil {
		return true
	}
	if depth == 0 {
		return false
	}
	for _, o := range others {
		if o.Equal(c) || !o.IsCA || !bytes.Equal(c.RawIssuer, o.RawSubject) {
			continue
		}
		if c.CheckSignatureFrom(o) == nil && chainsTo(o, root, others, depth-1) {
			return true
		}
	}
	return false
}

// dn shows an empty distinguished name visibly.
func dn(s string) string {
	if s == "" {
		return "(empty)"
	}
	return s
}

// KeyDescription names a public key's algorithm and size, e.g.
// "ECDSA P-256", "RSA 2048" or "ML-DSA-65 (post-quantum)".
func KeyDescription(pub any) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case ed25519.PublicKey:
		return "Ed25519"
	case *mldsa.PublicKey:
		return k.Parameters().String() + " (post-quantum)"
	}
	return fmt.Sprintf("%T", pub)
}

// PostQuantumSignature reports whether a certificate signature algorithm
// is post-quantum (ML-DSA).
func PostQuantumSignature(a x509.SignatureAlgorithm) bool {
	return a == x509.MLDSA44 || a == x509.MLDSA65 || a == x509.MLDSA87
}

// SignatureDescription names a certificate signature algorithm, marking
// the post-quantum ones.
func SignatureDescription(a x509.SignatureAlgorithm) string {
	if PostQuantumSignature(a) {
		return a.String() + " (post-quantum)"
	}
	return a.String()
}

var keyUsageNames = []struct {
	u    x509.KeyUsage
	name string
}{
	{x509.KeyUsageDigitalSignature, "digitalSignature"},
	{x509.KeyUsageContentCommitment, "contentCommitment"},
	{x509.KeyUsageKeyEncipherment, "keyEncipherment"},
	{x509.KeyUsageDataEncipherment, "dataEncipherment"},
	{x509.KeyUsageKeyAgreement, "keyAgreement"},
	{x509.KeyUsageCertSign, "keyCertSign"},
	{x509.KeyUsageCRLSign, "cRLSign"},
	{x509.KeyUsageEncipherOnly, "encipherOnly"},
	{x509.KeyUsageDecipherOnly, "decipherOnly"},
}

// KeyUsageNames returns the RFC 5280 names of the bits set in u.
func KeyUsageNames(u x509.KeyUsage) []string {
	var out []string
	for _, n := range keyUsageNames {
		if u&n.u != 0 {
			out = append(out, n.name)
		}
	}
	return out
}

var extKeyUsageNames = map[x509.ExtKeyUsage]string{
	x509.ExtKeyUsageAny:             "any",
	x509.ExtKeyUsageServerAuth:      "serverAuth",
	x509.ExtKeyUsageClientAuth:      "clientAuth",
	x509.ExtKeyUsageCodeSigning:     "codeSigning",
	x509.ExtKeyUsageEmailProtection: "emailProtection",
	x509.ExtKeyUsageTimeStamping:    "timeStamping",
	x509.ExtKeyUsageOCSPSigning:     "OCSPSigning",
}

// ExtKeyUsageNames returns the RFC 5280 names of extended key usages.
func ExtKeyUsageNames(us []x509.ExtKeyUsage) []string {
	var out []string
	for _, u := range us {
		if n, ok := extKeyUsageNames[u]; ok {
			out = append(out, n)
		} else {
			out = append(out, fmt.Sprintf("eku(%d)", u))
		}
	}
	return out
}

// WriteText writes i as aligned "name: value" lines, each prefixed with
// indent.
func (i Info) WriteText(w io.Writer, indent string) error {
	var b strings.Builder
	line := func(name, format string, args ...any) {
		fmt.Fprintf(&b, "%s%-12s %s\n", indent, name+":", fmt.Sprintf(format, args...))
	}
	line("subject", "%s", i.Subject)
	if i.SelfSigned {
		line("issuer", "%s (self-signed)", i.Issuer)
	} else {
		line("issuer", "%s", i.Issuer)
	}
	line("SANs", "%s", orNone(i.SANs))
	line("key", "%s", i.KeyType)
	line("signature", "%s", i.Signature)
	left := fmt.Sprintf("%d days left", i.DaysLeft)
	if i.DaysLeft < 0 {
		left = fmt.Sprintf("expired %d days ago", -i.DaysLeft)
	}
	line("valid", "%s to %s (%s)", i.NotBefore.UTC().Format(time.RFC3339), i.NotAfter.UTC().Format(time.RFC3339), left)
	line("sha256", "%s", i.Fingerprint)
	switch {
	case i.IsCA && i.MaxPathLen >= 0:
		line("type", "CA (CA:TRUE, path length %d): trust it at the origin; do not upload it to Cloudflare", i.MaxPathLen)
	case i.IsCA:
		line("type", "CA (CA:TRUE): trust it at the origin; do not upload it to Cloudflare")
	default:
		line("type", "leaf (CA:FALSE)")
	}
	line("key usage", "%s", orNone(i.KeyUsage))
	line("ext usage", "%s", orNone(i.ExtKeyUsage))
	switch i.Cloudflare {
	case IsCloudflareCA:
		line("cloudflare", "this IS Cloudflare's origin-pull CA (zone-level AOP with Cloudflare's certificate; shared by every Cloudflare account)")
	case IssuedByCloudflare:
		line("cloudflare", "chains to Cloudflare's origin-pull CA (zone-level AOP client certificate)")
	default:
		line("cloudflare", "does not chain to Cloudflare's origin-pull CA")
	}
	for _, n := range i.Notes {
		line("note", "%s", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
