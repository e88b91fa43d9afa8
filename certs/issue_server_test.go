package certs_test

import (
	"crypto/x509"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/aopguard/aopguard/certs"
)

func TestIssueServer(t *testing.T) {
	t.Parallel()
	ca, err := certs.NewCA(certs.IssueOptions{CommonName: "Example Origin CA", Days: 400, Now: issueNow})
	if err != nil {
		t.Fatal(err)
	}
	leafCA, err := certs.IssueClient(ca, certs.IssueOptions{CommonName: "not a ca", Now: issueNow})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		ca      *certs.Issued
		opts    certs.ServerOptions
		wantDNS []string
		wantIPs []string
		wantErr string
		errIs   error
	}{
		{name: "self-signed, name from the CN", opts: certs.ServerOptions{IssueOptions: certs.IssueOptions{CommonName: "app.example.com"}},
			wantDNS: []string{"app.example.com"}},
		{name: "self-signed, extra names, duplicates folded", opts: certs.ServerOptions{IssueOptions: certs.IssueOptions{CommonName: "App.Example.com", Key: certs.KeyRSA},
			DNSNames: []string{"app.example.com", "localhost", "*.example.com"}, IPs: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}},
			wantDNS: []string{"app.example.com", "localhost", "*.example.com"}, wantIPs: []string{"127.0.0.1", "::1"}},
		{name: "signed by a CA", ca: ca, opts: certs.ServerOptions{IssueOptions: certs.IssueOptions{CommonName: "origin"}, IPs: []net.IP{net.ParseIP("203.0.113.7")}},
			wantIPs: []string{"203.0.113.7"}},
		{name: "no name at all", opts: certs.ServerOptions{IssueOptions: certs.IssueOptions{CommonName: "my origin"}}, errIs: certs.ErrNoName},
		{name: "bad DNS name", opts: certs.ServerOptions{IssueOptions: certs.IssueOptions{CommonName: "app.example.com"}, DNSNames: []string{"bad name"}}, errIs: certs.ErrBadName},
		{name: "outliving the CA", ca: ca, opts: certs.ServerOptions{IssueOptions: certs.IssueOptions{CommonName: "app.example.com", Days: 500}}, wantErr: "would outlive the CA"},
		{name: "a leaf as CA", ca: leafCA, opts: certs.ServerOptions{IssueOptions: certs.IssueOptions{CommonName: "app.example.com"}}, wantErr: "is not a CA certificate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.opts.Now = issueNow
			got, err := certs.IssueServer(tc.ca, tc.opts)
			if tc.errIs != nil || tc.wantErr != "" {
				if err == nil || (tc.errIs != nil && !errors.Is(err, tc.errIs)) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v; want %v %q", err, tc.errIs, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c := got.Cert
			if c.IsCA || !c.BasicConstraintsValid || !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
				t.Errorf("IsCA %v, constraints %v, EKU %v; want a serverAuth leaf", c.IsCA, c.BasicConstraintsValid, certs.ExtKeyUsageNames(c.ExtKeyUsage))
			}
			var ips []string
			for _, ip := range c.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(c.DNSNames, tc.wantDNS) || !slices.Equal(ips, tc.wantIPs) {
				t.Errorf("SANs %v %v; want %v %v", c.DNSNames, ips, tc.wantDNS, tc.wantIPs)
			}
			roots := x509.NewCertPool()
			if tc.ca != nil {
				roots.AddCert(tc.ca.Cert)
			} else {
				roots.AddCert(c)
			}
			name := "203.0.113.7"
			if len(tc.wantDNS) > 0 {
				name = tc.wantDNS[0]
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, CurrentTime: issueNow}); err != nil {
				t.Errorf("does not verify for %s: %v", name, err)
			}
		})
	}
}
