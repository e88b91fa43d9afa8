package certs

import (
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"
)

// DefaultServerDays is how long an origin server certificate made by
// IssueServer is valid: a year.
const DefaultServerDays = 365

// Errors IssueServer returns for names it cannot put in a certificate.
var (
	// ErrNoName reports a server certificate without any subjectAltName.
	ErrNoName = errors.New("no DNS name or IP address: clients check the subjectAltName, not the common name")
	// ErrBadName reports a DNS name that is not a host name.
	ErrBadName = errors.New("not a host name")
)

// ServerOptions shape an origin server certificate made by IssueServer.
type ServerOptions struct {
	IssueOptions
	// DNSNames and IPs go in the subjectAltName, after the common name
	// when that is a host name. At least one name is required overall.
	DNSNames []string
	IPs      []net.IP
}

// IssueServer makes the origin's own TLS certificate: a leaf (CA:FALSE)
// with the serverAuth extended key usage and the names of opts in its
// subjectAltName. With ca nil it is self-signed (what Cloudflare's "Full"
// SSL mode accepts, and what a walkthrough on one machine needs); with a
// CA it is signed by it and may not outlive it.
func IssueServer(ca *Issued, o ServerOptions) (*Issued, error) {
	if ca != nil {
		if ca.Cert == nil || ca.Key == nil {
			return nil, errors.New("issuing server certificate: incomplete CA")
		}
		if err := checkIssuer(ca); err != nil {
			return nil, fmt.Errorf("issuing server certificate: %w", err)
		}
	}
	if o.Days == 0 {
		o.Days = DefaultServerDays
	}
	var dns []string
	if isHostName(o.CommonName) || o.CommonName == "localhost" {
		dns = append(dns, strings.ToLower(o.CommonName))
	}
	for _, n := range o.DNSNames {
		if !isHostName(n) && n != "localhost" {
			return nil, fmt.Errorf("issuing server certificate: DNS name %q: %w", n, ErrBadName)
		}
		if n = strings.ToLower(n); !slices.Contains(dns, n) {
			dns = append(dns, n)
		}
	}
	if len(dns) == 0 && len(o.IPs) == 0 {
		return nil, fmt.Errorf("issuing server certificate: common name %q is not a host name and %w", o.CommonName, ErrNoName)
	}
	tmpl, key, err := template(o.IssueOptions)
	if err != nil {
		return nil, err
	}
	tmpl.DNSNames = dns
	tmpl.IPAddresses = o.IPs
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	if _, ok := key.(*rsa.PrivateKey); ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	if ca == nil {
		return sign(tmpl, key, tmpl, key)
	}
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("issuing server certificate: %d days would outlive the CA %q, which expires %s; use fewer --days or a newer CA",
			o.Days, Describe(ca.Cert), ca.Cert.NotAfter.UTC().Format(time.DateOnly))
	}
	return sign(tmpl, key, ca.Cert, ca.Key)
}
