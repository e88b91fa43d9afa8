package certs

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
)

// LoadCRL reads a certificate revocation list, PEM ("X509 CRL") or DER.
// Its signature is checked later, against the CAs of the policy using it.
func LoadCRL(path string) (*x509.RevocationList, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	der := data
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != "X509 CRL" {
			return nil, fmt.Errorf("%s: PEM block is %q, want \"X509 CRL\"", path, block.Type)
		}
		der = block.Bytes
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("%s: not a CRL: %w", path, err)
	}
	return crl, nil
}
