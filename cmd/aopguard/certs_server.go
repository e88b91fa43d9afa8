package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"

	"github.com/aopguard/aopguard/certs"
)

const certsServerUsage = `Usage: aopguard certs server --cn NAME [--dns NAME ...] [--ip ADDR ...] [--ca CA] [--out OUT] [--days DAYS] [--key-type ecdsa|rsa] [--rsa-bits BITS] [--force]

Makes the origin's own TLS certificate, the one aopguard serves (certificates:
in its configuration, or --cert/--key): OUT.pem and OUT.key (mode 0600). It is
a leaf (CA:FALSE) with the serverAuth extended key usage; NAME (when it is a
host name), every --dns and every --ip go in the subjectAltName.

Without --ca it is self-signed: enough for Cloudflare's "Full" SSL mode and
for trying aopguard out (curl --cacert OUT.pem). With --ca it is signed by the
CA in CA.pem/CA.key and never outlives it. For Cloudflare's "Full
(strict)" mode, use a Cloudflare Origin CA certificate instead.
Defaults: ECDSA P-256, valid 365 days.

Flags:
`

// listFlag collects a flag given several times, or once with
// comma-separated values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

func certsServer(args []string, stdout, stderr io.Writer) error {
	fs := newCertsFlags("server", certsServerUsage, stdout)
	var (
		f       issueFlags
		ca      string
		dns, ip listFlag
	)
	fs.StringVar(&ca, "ca", "", "sign with the CA in `CA`.pem and CA.key (default: self-signed)")
	fs.Var(&dns, "dns", "also valid for host `NAME` (repeat, or comma-separated)")
	fs.Var(&ip, "ip", "also valid for IP address `ADDR` (repeat, or comma-separated)")
	f.register(fs, "the certificate's common `NAME`, e.g. app.example.com (required)", "origin", certs.DefaultServerDays)
	o, err := f.options(fs, args)
	if err != nil {
		return err
	}
	so := certs.ServerOptions{IssueOptions: o, DNSNames: dns}
	for _, s := range ip {
		addr := net.ParseIP(s)
		if addr == nil {
			return badInvocation(fmt.Errorf("--ip: %q is not an IP address", s))
		}
		so.IPs = append(so.IPs, addr)
	}
	var issuer *certs.Issued
	if ca != "" {
		caCert, caKey := certs.PairPaths(ca)
		if issuer, err = certs.LoadIssuer(caCert, caKey); err != nil {
			return fmt.Errorf("--ca: %w", err)
		}
	}
	leaf, err := certs.IssueServer(issuer, so)
	if err != nil {
		if errors.Is(err, certs.ErrNoName) || errors.Is(err, certs.ErrBadName) {
			return badInvocation(err)
		}
		return err
	}
	certFile, keyFile, err := writeIssued(leaf, f.out, f.force, stdout)
	if err != nil {
		return err
	}
	names := slices.Clone(leaf.Cert.DNSNames)
	for _, a := range leaf.Cert.IPAddresses {
		names = append(names, a.String())
	}
	fmt.Fprintf(stdout, "  names %s\n", strings.Join(names, ", "))
	if issuer == nil {
		fmt.Fprintf(stdout, "  self-signed: clients trust it with curl --cacert %s (Cloudflare's \"Full\" SSL mode accepts it)\n", certFile)
	}
	fmt.Fprintf(stdout, "next: aopguard run --cert %s --key %s --upstream http://127.0.0.1:8080  (or certificates: in the config)\n", certFile, keyFile)
	return nil
}
