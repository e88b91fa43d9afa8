package main

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"testing"

	"github.com/rs/zerolog"

	"github.com/aopguard/aopguard/internal/testpki"
)

// TestFailedReplaceKeepsLiveCertificates: a reload whose certificates
// cannot all be cached rolls back only what it added. Re-caching a
// certificate that is already served returns the live entry's hash; the
// rollback used to remove it, and the name fell back to another
// certificate. Checked with real handshakes.
func TestFailedReplaceKeepsLiveCertificates(t *testing.T) {
	ca := testpki.CA(t, "server CA")
	a := testpki.Server(t, ca, "a.example.com")
	c := testpki.Server(t, ca, "c.example.com")
	noNames := testpki.New(t, ca, testpki.Options{}) // certmagic refuses a certificate without names
	pair := func(x *testpki.Cert) tls.Certificate {
		p, err := tls.X509KeyPair(x.CertPEM(), x.KeyPEM())
		if err != nil {
			t.Fatal(err)
		}
		p.Leaf = x.Cert
		return p
	}
	s, err := newServerCerts(zerolog.New(io.Discard), nil, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if err := s.replace([]tls.Certificate{pair(a), pair(c)}); err != nil {
		t.Fatal(err)
	}
	if err := s.replace([]tls.Certificate{pair(c), pair(noNames)}); err == nil {
		t.Fatal("a certificate without names was cached")
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				tls.Server(conn, &tls.Config{GetCertificate: s.getCertificate}).Handshake()
			}()
		}
	}()
	for _, want := range []*testpki.Cert{a, c} {
		name := want.Cert.DNSNames[0]
		roots := x509.NewCertPool()
		roots.AddCert(ca.Cert)
		conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: name, RootCAs: roots})
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if got := conn.ConnectionState().PeerCertificates[0]; !got.Equal(want.Cert) {
			t.Errorf("%s: served %s, want its own certificate", name, got.DNSNames)
		}
		conn.Close()
	}
}
