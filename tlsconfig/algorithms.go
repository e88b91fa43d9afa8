package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
)

// KeyAgreementName names a negotiated TLS key-agreement group for logs and
// metric labels, from a fixed set: the groups crypto/tls can negotiate as a
// server ("X25519MLKEM768", "X25519", "P-256", ...), "none" when there was
// no key agreement (a resumed TLS 1.2 session) and "other" otherwise.
func KeyAgreementName(id tls.CurveID) string {
	switch id {
	case 0:
		return "none"
	case tls.X25519MLKEM768, tls.SecP256r1MLKEM768, tls.SecP384r1MLKEM1024, tls.MLKEM1024, tls.X25519:
		return id.String()
	case tls.CurveP256:
		return "P-256"
	case tls.CurveP384:
		return "P-384"
	case tls.CurveP521:
		return "P-521"
	}
	return "other"
}

// PostQuantumKeyAgreement reports whether a key-agreement group is
// post-quantum (ML-KEM, alone or in a hybrid).
func PostQuantumKeyAgreement(id tls.CurveID) bool {
	switch id {
	case tls.X25519MLKEM768, tls.SecP256r1MLKEM768, tls.SecP384r1MLKEM1024, tls.MLKEM1024:
		return true
	}
	return false
}

// SignatureName names the signature algorithm of a verdict's client
// certificate for logs and metric labels: crypto/x509's name for it
// ("ML-DSA-65", "ECDSA-SHA256", "SHA256-RSA", ...: a fixed set), "none"
// when no certificate was presented and "other" for one crypto/x509 does
// not know.
func SignatureName(v Verdict) string {
	switch {
	case v.Fingerprint == "":
		return "none"
	case v.Signature == x509.UnknownSignatureAlgorithm:
		return "other"
	}
	return v.Signature.String()
}
