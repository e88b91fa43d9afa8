package tlsconfig

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// AllowRules narrow a policy to particular client certificates after the
// chain has verified: pinning by certificate or public-key hash, or by DNS
// name or common name. A leaf passes when it matches any configured rule;
// with no rules every verified leaf passes.
type AllowRules struct {
	SHA256     [][32]byte // SHA-256 of the leaf's DER
	SPKISHA256 [][32]byte // SHA-256 of the leaf's SubjectPublicKeyInfo (survives re-issuance with the same key)
	DNS        []string   // a DNS SAN of the leaf, exact, case-insensitive
	CN         []string   // the leaf's subject common name, exact
}

// ParseHash reads a SHA-256 given as hex (colons and case ignored, as
// openssl prints it) or as standard base64 (as HPKP pins were written).
func ParseHash(s string) ([32]byte, error) {
	var out [32]byte
	if strings.ContainsAny(strings.TrimSpace(s), "\r\n\t ") {
		// encoding/base64 skips line breaks; a pin is one token.
		return out, fmt.Errorf("%q contains white space", s)
	}
	h := strings.ReplaceAll(strings.TrimSpace(s), ":", "")
	if b, err := hex.DecodeString(h); err == nil && len(b) == 32 {
		copy(out[:], b)
		return out, nil
	}
	if b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s)); err == nil && len(b) == 32 {
		copy(out[:], b)
		return out, nil
	}
	return out, fmt.Errorf("%q is not a SHA-256 in hex or base64", s)
}

// Empty reports whether no rule is configured.
func (a *AllowRules) Empty() bool {
	return len(a.SHA256)+len(a.SPKISHA256)+len(a.DNS)+len(a.CN) == 0
}

// Match reports whether leaf satisfies the rules.
func (a *AllowRules) Match(leaf *x509.Certificate) bool {
	if a.Empty() {
		return true
	}
	if len(a.SHA256) > 0 {
		sum := sha256.Sum256(leaf.Raw)
		for _, h := range a.SHA256 {
			if h == sum {
				return true
			}
		}
	}
	if len(a.SPKISHA256) > 0 {
		sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
		for _, h := range a.SPKISHA256 {
			if h == sum {
				return true
			}
		}
	}
	for _, want := range a.DNS {
		for _, got := range leaf.DNSNames {
			if strings.EqualFold(want, got) {
				return true
			}
		}
	}
	for _, want := range a.CN {
		if leaf.Subject.CommonName == want {
			return true
		}
	}
	return false
}

// revocations holds the revoked serial numbers of every CRL a policy
// loaded, by the raw subject of the CA that signed the CRL.
type revocations map[string]map[string]bool

// newRevocations checks each CRL's signature against the policy's CAs and
// indexes its entries. A CRL no CA of the policy signed is an error: it
// could not be trusted to revoke anything.
func newRevocations(crls []*x509.RevocationList, cas []*x509.Certificate) (revocations, error) {
	if len(crls) == 0 {
		return nil, nil
	}
	r := revocations{}
	for i, crl := range crls {
		if err := CheckCRLSigner(crl, cas); err != nil {
			return nil, fmt.Errorf("CRL %d: %w", i+1, err)
		}
		set := r[string(crl.RawIssuer)]
		if set == nil {
			set = map[string]bool{}
			r[string(crl.RawIssuer)] = set
		}
		for _, e := range crl.RevokedCertificateEntries {
			set[string(e.SerialNumber.Bytes())] = true
		}
	}
	return r, nil
}

// CheckCRLSigner reports an error unless one of cas signed crl: a CRL
// no CA of the policy signed could not be trusted to revoke anything.
func CheckCRLSigner(crl *x509.RevocationList, cas []*x509.Certificate) error {
	for _, ca := range cas {
		if bytes.Equal(ca.RawSubject, crl.RawIssuer) && crl.CheckSignatureFrom(ca) == nil {
			return nil
		}
	}
	return fmt.Errorf("the CRL (issuer %s) is not signed by any CA of this policy", crl.Issuer)
}

// revoked reports whether any certificate of a verified chain (root
// excluded) is listed in a CRL of its issuer.
func (r revocations) revoked(chain []*x509.Certificate) bool {
	for i := 0; i+1 < len(chain); i++ {
		if set := r[string(chain[i].RawIssuer)]; set != nil && set[string(chain[i].SerialNumber.Bytes())] {
			return true
		}
	}
	return false
}
