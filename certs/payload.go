package certs

import (
	"bytes"
	"crypto/mldsa"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// UploadBody is the JSON body of Cloudflare's client certificate upload
// endpoints: POST /zones/:zone/origin_tls_client_auth (zone level) and
// POST /zones/:zone/origin_tls_client_auth/hostnames/certificates (per
// hostname). Both fields hold PEM text; encoding/json escapes its newlines
// as \n, which is what the perl/sed pipeline in Cloudflare's guide does by
// hand.
type UploadBody struct {
	Certificate string `json:"certificate"`
	PrivateKey  string `json:"private_key"`
}

// HostnamesBody is the JSON body of PUT
// /zones/:zone/origin_tls_client_auth/hostnames, which turns per-hostname
// Authenticated Origin Pulls on (or off) with an uploaded certificate.
type HostnamesBody struct {
	Config []HostnameAuth `json:"config"`
}

// HostnameAuth is one hostname's entry in a HostnamesBody.
type HostnameAuth struct {
	Hostname string `json:"hostname"`
	CertID   string `json:"cert_id"`
	Enabled  bool   `json:"enabled"`
}

// ErrCACertificate reports an attempt to upload a CA certificate where
// Cloudflare wants the leaf client certificate.
var ErrCACertificate = errors.New("is a CA certificate; Cloudflare accepts only a leaf client certificate: upload one issued by this CA (aopguard certs client --ca ...)")

// uploadWarnDays: Cloudflare refuses custom certificates expiring in less
// than 14 days, and alerts at 30 and 14 days before expiry.
const uploadWarnDays = 14

// NewUploadBody builds the upload body from a certificate file's and a key
// file's contents. It keeps the CERTIFICATE blocks (leaf first, as given)
// and the one private key, drops EC PARAMETERS blocks (which openssl
// ecparam writes and Cloudflare rejects) and re-encodes both as canonical
// PEM with \n line endings. It refuses a key that does not match the
// certificate, an encrypted key, a CA certificate, a certificate that does
// not allow client authentication, and an expired one. Warnings are
// returned for things that will work but deserve attention.
func NewUploadBody(certPEM, keyPEM []byte, now time.Time) (body UploadBody, warnings []string, err error) {
	certOut, dropped, err := keepBlocks(certPEM, "certificate file", func(b *pem.Block) (bool, error) {
		switch {
		case b.Type == "CERTIFICATE":
			return true, nil
		case b.Type == "EC PARAMETERS":
			return false, nil
		case isPrivateKeyType(b.Type):
			return false, nil // a combined cert+key file: the key comes from the key file
		}
		return false, fmt.Errorf("unexpected PEM block %q", b.Type)
	})
	if err != nil {
		return body, nil, err
	}
	if len(certOut) == 0 {
		return body, nil, fmt.Errorf("certificate file: %w", ErrNoCertificate)
	}
	keyOut, _, err := keepBlocks(keyPEM, "key file", func(b *pem.Block) (bool, error) {
		switch {
		case b.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED"):
			return false, errors.New("the private key is encrypted; Cloudflare needs it unencrypted (openssl pkey -in KEY -out plain.key)")
		case isPrivateKeyType(b.Type):
			return true, nil
		case b.Type == "EC PARAMETERS", b.Type == "CERTIFICATE":
			return false, nil
		}
		return false, fmt.Errorf("unexpected PEM block %q", b.Type)
	})
	if err != nil {
		return body, nil, err
	}
	switch len(keyOut) {
	case 0:
		return body, nil, errors.New("key file: no private key found")
	case 1:
	default:
		return body, nil, fmt.Errorf("key file: %d private keys found, want one", len(keyOut))
	}
	body.Certificate = string(bytes.Join(certOut, nil))
	body.PrivateKey = string(keyOut[0])
	seedOnly, converted, err := mldsaSeedOnly(keyOut[0])
	if err != nil {
		return UploadBody{}, nil, fmt.Errorf("key file: %w", err)
	}
	if converted {
		body.PrivateKey = string(seedOnly)
		warnings = append(warnings, "key file: the ML-DSA key also held its expanded form; the upload carries the seed-only form Cloudflare expects")
	}
	pair, err := tls.X509KeyPair([]byte(body.Certificate), []byte(body.PrivateKey))
	if err != nil {
		return UploadBody{}, nil, fmt.Errorf("certificate and key do not go together: %w", err)
	}
	leaf := pair.Leaf
	if leaf.IsCA {
		return UploadBody{}, nil, fmt.Errorf("%q %w", Describe(leaf), ErrCACertificate)
	}
	if len(leaf.ExtKeyUsage) > 0 && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return UploadBody{}, nil, fmt.Errorf("%q does not allow client authentication (extended key usage %s); origins will refuse it", Describe(leaf), strings.Join(ExtKeyUsageNames(leaf.ExtKeyUsage), ", "))
	}
	if k, ok := leaf.PublicKey.(*rsa.PublicKey); ok && k.N.BitLen() < 2048 {
		return UploadBody{}, nil, fmt.Errorf("%q has a %d-bit RSA key; Cloudflare requires at least 2048 bits", Describe(leaf), k.N.BitLen())
	}
	if now.After(leaf.NotAfter) {
		return UploadBody{}, nil, fmt.Errorf("%q expired on %s", Describe(leaf), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if left := leaf.NotAfter.Sub(now); left < uploadWarnDays*24*time.Hour {
		warnings = append(warnings, fmt.Sprintf("%q expires in %d days (%s): Cloudflare may refuse it; issue a new one", Describe(leaf), int(left.Hours()/24), leaf.NotAfter.UTC().Format(time.RFC3339)))
	}
	if now.Before(leaf.NotBefore) {
		warnings = append(warnings, fmt.Sprintf("%q is not valid until %s", Describe(leaf), leaf.NotBefore.UTC().Format(time.RFC3339)))
	}
	for _, typ := range dropped {
		if typ != "EC PARAMETERS" {
			warnings = append(warnings, fmt.Sprintf("certificate file: ignored a %s block", typ))
		}
	}
	return body, warnings, nil
}

// ML-DSA algorithm identifiers (RFC 9881).
var mldsaOIDs = map[string]mldsa.Parameters{
	"2.16.840.1.101.3.4.3.17": mldsa.MLDSA44(),
	"2.16.840.1.101.3.4.3.18": mldsa.MLDSA65(),
	"2.16.840.1.101.3.4.3.19": mldsa.MLDSA87(),
}

// mldsaExpandedSize is the size of each parameter set's expanded private
// key (FIPS 204). crypto/mldsa cannot derive it, so the converter checks
// only its size; tls.X509KeyPair then checks the seed against the
// certificate.
var mldsaExpandedSize = map[mldsa.Parameters]int{mldsa.MLDSA44(): 2560, mldsa.MLDSA65(): 4032, mldsa.MLDSA87(): 4896}

// pkcs8 is a PKCS#8 PrivateKeyInfo (RFC 5208), attributes aside.
type pkcs8 struct {
	Version    int
	Algo       pkix.AlgorithmIdentifier
	PrivateKey []byte
	Rest       asn1.RawValue `asn1:"optional"`
}

// mldsaSeedOnly rewrites an ML-DSA PKCS#8 key that holds both the seed and
// the expanded key (RFC 9881's "both" form, which OpenSSL 3.5 writes by
// default) in the seed-only form. Other keys, and ML-DSA keys already
// seed-only, are left alone (converted false). A key holding only the
// expanded form is an error: its seed cannot be recovered.
func mldsaSeedOnly(keyPEM []byte) (out []byte, converted bool, err error) {
	b, _ := pem.Decode(keyPEM)
	if b == nil || b.Type != "PRIVATE KEY" {
		return nil, false, nil
	}
	var k pkcs8
	if _, err := asn1.Unmarshal(b.Bytes, &k); err != nil || len(k.PrivateKey) == 0 {
		return nil, false, nil // not ours to judge: tls.X509KeyPair reports it
	}
	params, ok := mldsaOIDs[k.Algo.Algorithm.String()]
	if !ok {
		return nil, false, nil
	}
	switch k.PrivateKey[0] {
	case 0x80: // [0] IMPLICIT OCTET STRING: the seed alone
		return nil, false, nil
	case 0x04: // OCTET STRING: the expanded key alone
		return nil, false, fmt.Errorf("the %s private key holds only its expanded form, not the 32-byte seed it was made from; Cloudflare needs the seed-only form, which cannot be recovered from it: make a new key and certificate (aopguard certs client --key-type %s)", params, strings.ToLower(params.String()))
	}
	var both struct {
		Seed     []byte
		Expanded []byte
	}
	if rest, err := asn1.Unmarshal(k.PrivateKey, &both); err != nil || len(rest) != 0 || len(both.Seed) != mldsa.PrivateKeySize ||
		len(both.Expanded) != mldsaExpandedSize[params] {
		return nil, false, fmt.Errorf("the %s private key is in none of the seed, expanded or both forms of RFC 9881", params)
	}
	key, err := mldsa.NewPrivateKey(params, both.Seed)
	if err != nil {
		return nil, false, fmt.Errorf("the %s private key's seed: %w", params, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, false, fmt.Errorf("encoding the %s private key: %w", params, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), true, nil
}

func isPrivateKeyType(t string) bool {
	return t == "PRIVATE KEY" || t == "EC PRIVATE KEY" || t == "RSA PRIVATE KEY"
}

// keepBlocks decodes every PEM block in data and re-encodes those keep
// accepts. It returns the types of the blocks it dropped. Text that is not
// PEM at all is an error, as in ParseBundle.
func keepBlocks(data []byte, what string, keep func(*pem.Block) (bool, error)) (kept [][]byte, dropped []string, err error) {
	rest := data
	for n := 1; ; n++ {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		ok, err := keep(b)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: PEM block %d: %w", what, n, err)
		}
		if !ok {
			dropped = append(dropped, b.Type)
			continue
		}
		kept = append(kept, pem.EncodeToMemory(b))
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, nil, fmt.Errorf("%s: unparseable data after PEM block %d (truncated or not PEM)", what, len(kept)+len(dropped))
	}
	return kept, dropped, nil
}

// NewHostnamesBody builds the body that enables (or, with enabled false,
// disables) per-hostname Authenticated Origin Pulls for hostnames with the
// uploaded certificate certID.
func NewHostnamesBody(hostnames []string, certID string, enabled bool) (HostnamesBody, error) {
	certID = strings.TrimSpace(certID)
	if certID == "" {
		return HostnamesBody{}, errors.New("a certificate id is required (the id in Cloudflare's answer to the upload)")
	}
	if len(hostnames) == 0 {
		return HostnamesBody{}, errors.New("at least one hostname is required")
	}
	var b HostnamesBody
	seen := map[string]bool{}
	for _, h := range hostnames {
		h = strings.TrimSpace(h)
		if !isHostName(h) {
			return HostnamesBody{}, fmt.Errorf("%q is not a host name", h)
		}
		if seen[strings.ToLower(h)] {
			return HostnamesBody{}, fmt.Errorf("%q is given twice", h)
		}
		seen[strings.ToLower(h)] = true
		b.Config = append(b.Config, HostnameAuth{Hostname: h, CertID: certID, Enabled: enabled})
	}
	return b, nil
}

// MarshalBody encodes a request body as one line of JSON followed by a
// newline, without HTML escaping, ready for curl --data @file.
func MarshalBody(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encoding JSON: %w", err)
	}
	return buf.Bytes(), nil
}
