package main

import (
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/aopguard/aopguard/certs"
	"github.com/aopguard/aopguard/config"
	"github.com/aopguard/aopguard/snapshot"
	"github.com/aopguard/aopguard/tlsconfig"
)

const certsUsage = `Usage: aopguard certs COMMAND [flags]

Certificates for Authenticated Origin Pulls with your own CA (per-hostname
AOP, or zone-level AOP with a customer certificate):

  ca       make a private CA: the CA the origin trusts
  client   issue a client certificate from it: the one uploaded to Cloudflare
  server   make the origin's own TLS certificate (self-signed, or from a CA)
  payload  print the JSON body for Cloudflare's upload (or hostname) API call
  inspect  describe certificates, and which aopguard policies accept them
  ticket-keys  make or rotate a file of session ticket keys shared by replicas

The workflow:

  aopguard certs ca --cn "Example AOP CA" --out ca          # ca.pem, ca.key
  aopguard certs client --ca ca --cn app.example.com --out client
  aopguard certs server --cn app.example.com --out origin   # the origin's own TLS certificate
  aopguard certs payload --cert client.pem --key client.key > upload.json
  curl -X POST https://api.cloudflare.com/client/v4/zones/$ZONE/origin_tls_client_auth/hostnames/certificates \
       -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d @upload.json
  aopguard certs payload --hostnames app.example.com --cert-id $ID > enable.json
  curl -X PUT https://api.cloudflare.com/client/v4/zones/$ZONE/origin_tls_client_auth/hostnames \
       -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d @enable.json
  aopguard check --origin 203.0.113.7:443 --host app.example.com --insecure \
       --client-cert client.pem --client-key client.key

For post-quantum AOP, add --key-type ml-dsa-65 (or ml-dsa-44, ml-dsa-87) to
both "ca" and "client": ML-DSA certificates work over TLS 1.3 only, and their
keys are written seed-only, as Cloudflare's upload expects.

Keys are written with mode 0600 and no existing file is overwritten without
--force. Exit status: 0 on success, 1 when the files given cannot be used or
an operation fails, 2 for a bad invocation (unknown flags, missing values,
an output file that exists).

Run "aopguard certs COMMAND -h" for a command's flags.
`

func certsCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, certsUsage)
		return exitConfig
	}
	var err error
	switch args[0] {
	case "ca":
		err = certsCA(args[1:], stdout, stderr)
	case "client":
		err = certsClient(args[1:], stdout, stderr)
	case "server":
		err = certsServer(args[1:], stdout, stderr)
	case "payload":
		err = certsPayload(args[1:], stdout, stderr)
	case "inspect":
		err = certsInspect(args[1:], stdout, stderr)
	case "ticket-keys":
		err = certsTicketKeys(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, certsUsage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "aopguard certs: unknown command %q\n\n%s", args[0], certsUsage)
		return exitConfig
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintf(stderr, "aopguard certs %s: %v\n", args[0], err)
		return exitCode(err)
	}
	return exitOK
}

func badInvocation(err error) error { return &exitError{exitConfig, err} }

// newCertsFlags returns the flag set of "aopguard certs name"; -h writes
// usage and the flags to stdout.
func newCertsFlags(name, usage string, stdout io.Writer) *commandFlags {
	return newCommandFlags("aopguard certs "+name, usage, stdout)
}

// parseAll parses flags and positional arguments in any order
// ("inspect a.pem --config x.yaml").
func parseAll(fs *commandFlags, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func noArgs(fs *commandFlags, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return badInvocation(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	return nil
}

// issueFlags are the flags ca and client share: what to issue, where to
// write it, and the key algorithm.
type issueFlags struct {
	cn, out, keyType string
	days, rsaBits    int
	force            bool
}

func (f *issueFlags) register(fs *commandFlags, cnHelp, out string, days int) {
	fs.StringVar(&f.cn, "cn", "", cnHelp)
	fs.StringVar(&f.out, "out", out, "write `OUT`.pem and OUT.key")
	fs.IntVar(&f.days, "days", days, "validity in `DAYS`")
	fs.BoolVar(&f.force, "force", false, "overwrite existing files")
	fs.StringVar(&f.keyType, "key-type", string(certs.KeyECDSA), "key `ALGORITHM`: ecdsa (P-256), rsa, or post-quantum ml-dsa-44, ml-dsa-65, ml-dsa-87 (TLS 1.3 only; the key is written seed-only)")
	fs.IntVar(&f.rsaBits, "rsa-bits", certs.DefaultRSABits, "RSA key size in `BITS` (2048, 3072 or 4096) with --key-type rsa")
}

// options parses args and checks the shared flags.
func (f *issueFlags) options(fs *commandFlags, args []string) (certs.IssueOptions, error) {
	if err := noArgs(fs, args); err != nil {
		return certs.IssueOptions{}, err
	}
	t, err := certs.ParseKeyType(f.keyType)
	if err != nil {
		return certs.IssueOptions{}, badInvocation(fmt.Errorf("--key-type: %w", err))
	}
	if f.rsaBits != 2048 && f.rsaBits != 3072 && f.rsaBits != 4096 {
		return certs.IssueOptions{}, badInvocation(fmt.Errorf("--rsa-bits: %d is not one of 2048, 3072, 4096", f.rsaBits))
	}
	if strings.TrimSpace(f.cn) == "" {
		return certs.IssueOptions{}, badInvocation(errors.New("--cn is required"))
	}
	if f.days <= 0 {
		return certs.IssueOptions{}, badInvocation(fmt.Errorf("--days: %d is not positive", f.days))
	}
	return certs.IssueOptions{CommonName: f.cn, Days: f.days, Key: t, RSABits: f.rsaBits}, nil
}

// writeIssued writes a pair and reports it; an existing file is an
// invocation error (pick another --out or add --force).
func writeIssued(iss *certs.Issued, out string, force bool, stdout io.Writer) (string, string, error) {
	certFile, keyFile := certs.PairPaths(out)
	if err := certs.WritePair(iss, certFile, keyFile, force); err != nil {
		if errors.Is(err, certs.ErrExists) {
			return "", "", badInvocation(err)
		}
		return "", "", err
	}
	fmt.Fprintf(stdout, "wrote %s (certificate) and %s (private key, mode 0600)\n", certFile, keyFile)
	fmt.Fprintf(stdout, "  subject %s, %s, valid until %s, sha256 %s\n", iss.Cert.Subject, certs.KeyDescription(iss.Cert.PublicKey),
		iss.Cert.NotAfter.UTC().Format(time.RFC3339), certs.Fingerprint(iss.Cert.Raw))
	return certFile, keyFile, nil
}

const certsCAUsage = `Usage: aopguard certs ca --cn NAME [--out OUT] [--days DAYS] [--key-type ecdsa|rsa|ml-dsa-44|ml-dsa-65|ml-dsa-87] [--rsa-bits BITS] [--force]

Makes a private CA for Authenticated Origin Pulls: OUT.pem (the certificate:
trust it at the origin, e.g. aopguard's hosts[].ca or zone_ca, nginx's
ssl_client_certificate) and OUT.key (its private key, mode 0600: keep it
offline; it is needed only to issue client certificates). The CA is CA:TRUE
with path length 0 and the keyCertSign and cRLSign key usages. Defaults:
ECDSA P-256, valid 3650 days (10 years). An ML-DSA CA (post-quantum) signs
with ML-DSA; its key is written as seed-only PKCS#8.

Flags:
`

func certsCA(args []string, stdout, stderr io.Writer) error {
	fs := newCertsFlags("ca", certsCAUsage, stdout)
	var f issueFlags
	f.register(fs, "the CA's common `NAME`, e.g. \"Example AOP CA\" (required)", "ca", certs.DefaultCADays)
	o, err := f.options(fs, args)
	if err != nil {
		return err
	}
	ca, err := certs.NewCA(o)
	if err != nil {
		return err
	}
	certFile, _, err := writeIssued(ca, f.out, f.force, stdout)
	if err != nil {
		return err
	}
	next := "aopguard certs client --ca " + strings.TrimSuffix(certFile, ".pem") + " --cn app.example.com --out client"
	if o.Key != "" && o.Key != certs.KeyECDSA && o.Key != certs.KeyRSA {
		next += " --key-type " + string(o.Key) // a post-quantum CA issues post-quantum clients
	}
	fmt.Fprintf(stdout, "next: %s\n", next)
	return nil
}

const certsClientUsage = `Usage: aopguard certs client --cn NAME [--ca CA] [--out OUT] [--days DAYS] [--key-type ecdsa|rsa|ml-dsa-44|ml-dsa-65|ml-dsa-87] [--rsa-bits BITS] [--force]

Issues the client certificate Cloudflare presents to the origin: OUT.pem and
OUT.key (mode 0600), signed by the CA in CA.pem/CA.key (from "aopguard certs
ca"). It is a leaf (CA:FALSE; Cloudflare rejects CA uploads) with the
clientAuth extended key usage; a NAME that is a hostname is also put in the
subjectAltName. Defaults: ECDSA P-256, valid 365 days, never beyond the CA.
For post-quantum AOP, give both the CA and the client an ML-DSA key type:
an ML-DSA client certificate can only be presented over TLS 1.3, and its key
is written as seed-only PKCS#8, the form Cloudflare's upload expects.

Flags:
`

func certsClient(args []string, stdout, stderr io.Writer) error {
	fs := newCertsFlags("client", certsClientUsage, stdout)
	var f issueFlags
	var ca string
	fs.StringVar(&ca, "ca", "ca", "sign with the CA in `CA`.pem and CA.key")
	f.register(fs, "the certificate's common `NAME`, e.g. app.example.com (required)", "client", certs.DefaultClientDays)
	o, err := f.options(fs, args)
	if err != nil {
		return err
	}
	caCert, caKey := certs.PairPaths(ca)
	issuer, err := certs.LoadIssuer(caCert, caKey)
	if err != nil {
		return fmt.Errorf("--ca: %w", err)
	}
	leaf, err := certs.IssueClient(issuer, o)
	if err != nil {
		return err
	}
	certFile, keyFile, err := writeIssued(leaf, f.out, f.force, stdout)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "next: aopguard certs payload --cert %s --key %s > upload.json\n", certFile, keyFile)
	return nil
}

const certsPayloadUsage = `Usage: aopguard certs payload --cert FILE --key FILE
       aopguard certs payload --hostnames NAME[,NAME...] --cert-id ID [--disable]

With --cert and --key, prints the JSON body for Cloudflare's certificate
upload endpoints (POST /zones/:zone/origin_tls_client_auth/hostnames/certificates
for per-hostname AOP, POST /zones/:zone/origin_tls_client_auth for a zone-level
customer certificate): {"certificate": "...", "private_key": "..."} with the
PEM newlines escaped properly. EC PARAMETERS blocks are dropped. It refuses a
key that does not match the certificate, an encrypted key, a CA certificate
and a certificate without the clientAuth usage.

With --hostnames and --cert-id (the id from the upload's answer), prints the
body for PUT /zones/:zone/origin_tls_client_auth/hostnames, which enables
per-hostname AOP: {"config":[{"hostname":"...","cert_id":"...","enabled":true}]}.

Flags:
`

func certsPayload(args []string, stdout, stderr io.Writer) error {
	fs := newCertsFlags("payload", certsPayloadUsage, stdout)
	var (
		certFile, keyFile, hostnames, certID string
		disable                              bool
	)
	fs.StringVar(&certFile, "cert", "", "the client certificate, PEM `FILE`")
	fs.StringVar(&keyFile, "key", "", "its private key, PEM `FILE` (unencrypted)")
	fs.StringVar(&hostnames, "hostnames", "", "enable per-hostname AOP for host `NAME` (comma-separated for several)")
	fs.StringVar(&certID, "cert-id", "", "the uploaded certificate's `ID`, with --hostnames")
	fs.BoolVar(&disable, "disable", false, "with --hostnames: \"enabled\": false, to turn per-hostname AOP off")
	if err := noArgs(fs, args); err != nil {
		return err
	}
	upload, enable := certFile != "" || keyFile != "", hostnames != "" || certID != ""
	switch {
	case upload && enable:
		return badInvocation(errors.New("--cert/--key (upload body) and --hostnames/--cert-id (enable body) are separate calls: give one pair"))
	case !upload && !enable:
		return badInvocation(errors.New("give --cert and --key, or --hostnames and --cert-id"))
	case enable:
		if hostnames == "" || certID == "" {
			return badInvocation(errors.New("--hostnames and --cert-id go together"))
		}
		body, err := certs.NewHostnamesBody(strings.Split(hostnames, ","), certID, !disable)
		if err != nil {
			return badInvocation(err)
		}
		return writeBody(stdout, body)
	}
	if certFile == "" || keyFile == "" {
		return badInvocation(errors.New("--cert and --key go together"))
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	body, warnings, err := certs.NewUploadBody(certPEM, keyPEM, time.Now())
	if err != nil {
		return fmt.Errorf("%s with %s: %w", certFile, keyFile, err)
	}
	for _, w := range warnings {
		fmt.Fprintf(stderr, "aopguard certs payload: warning: %s\n", w)
	}
	return writeBody(stdout, body)
}

func writeBody(w io.Writer, body any) error {
	b, err := certs.MarshalBody(body)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

const certsInspectUsage = `Usage: aopguard certs inspect [--config FILE] FILE...

Describes every certificate in each PEM FILE (bundles too): subject, issuer,
subjectAltNames, key type, validity with days left, SHA-256 fingerprint (as in
aopguard's X-Client-Cert-Fingerprint), CA or leaf, and whether it chains to
Cloudflare's origin-pull CA (embedded in aopguard). With --config, also which
of that configuration's policies accept it as a client certificate (the other
certificates in the same file serve as intermediates), or, for a CA, which
policies trust it.

Flags:
`

func certsInspect(args []string, stdout, stderr io.Writer) error {
	fs := newCertsFlags("inspect", certsInspectUsage, stdout)
	var configFile string
	fs.StringVar(&configFile, "config", "", "judge each certificate under the policies of aopguard configuration `FILE`")
	files, err := parseAll(fs, args)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return badInvocation(errors.New("name at least one PEM file"))
	}
	var set *tlsconfig.Set
	if configFile != "" {
		if set, err = loadPolicySet(configFile); err != nil {
			return badInvocation(err)
		}
	}
	now := time.Now()
	var failed []string
	printed := false
	for _, file := range files {
		cs, err := certs.LoadBundle(file)
		if err != nil {
			fmt.Fprintf(stderr, "aopguard certs inspect: %v\n", err)
			failed = append(failed, file)
			continue
		}
		for i, c := range cs {
			if printed {
				fmt.Fprintln(stdout)
			}
			printed = true
			fmt.Fprintf(stdout, "%s [%d/%d]\n", file, i+1, len(cs))
			others := make([]*x509.Certificate, 0, len(cs)-1)
			for j, o := range cs {
				if j != i {
					others = append(others, o)
				}
			}
			if err := certs.Inspect(c, others, now).WriteText(stdout, "  "); err != nil {
				return err
			}
			if set != nil {
				writeVerdicts(stdout, set, c, others)
			}
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("could not read %s", strings.Join(failed, ", "))
	}
	return nil
}

// loadPolicySet compiles the policies of an aopguard configuration file
// exactly as "aopguard run" does.
func loadPolicySet(file string) (*tlsconfig.Set, error) {
	cfg, err := config.Load(file)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	zone, hosts, _, err := snapshot.Policies(cfg)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	tickets, err := tlsconfig.NewTicketKeys()
	if err != nil {
		return nil, err
	}
	set, err := tlsconfig.NewSet(zone, hosts, tlsconfig.Options{Tickets: tickets})
	if err != nil {
		return nil, fmt.Errorf("--config: %s: %w", file, err)
	}
	return set, nil
}

// writeVerdicts reports, for a CA, which policies trust it, and for a leaf
// each policy's verdict on it as a client certificate.
func writeVerdicts(w io.Writer, set *tlsconfig.Set, c *x509.Certificate, others []*x509.Certificate) {
	const indent = "  "
	if c.IsCA {
		var trusted []string
		for _, p := range set.Policies() {
			for _, ca := range p.CAs() {
				if ca.Equal(c) {
					trusted = append(trusted, fmt.Sprintf("%s (%s)", p.Name(), p.Mode()))
					break
				}
			}
		}
		fmt.Fprintf(w, "%s%-12s %s\n", indent, "trusted by:", orNoPolicy(trusted))
		return
	}
	var accepted []string
	fmt.Fprintf(w, "%spolicies (as a client certificate):\n", indent)
	chain := append([]*x509.Certificate{c}, others...)
	for _, p := range set.Policies() {
		v := p.Verify(chain)
		var what string
		switch {
		case p.Mode() == tlsconfig.Off:
			what = "allow: not checked (mode off)"
		default:
			what = fmt.Sprintf("%s: %s", p.ActionFor(v), v.Header())
		}
		if v.Result == tlsconfig.Success {
			accepted = append(accepted, p.Name())
		}
		label := fmt.Sprintf("%s (%s)", p.Name(), p.Mode())
		if p.Signatures() == tlsconfig.PostQuantum {
			label = fmt.Sprintf("%s (%s, post-quantum)", p.Name(), p.Mode())
		}
		fmt.Fprintf(w, "%s  %-28s %s\n", indent, label, what)
	}
	fmt.Fprintf(w, "%s%-12s %s\n", indent, "accepted by:", orNoPolicy(accepted))
}

func orNoPolicy(names []string) string {
	if len(names) == 0 {
		return "no policy"
	}
	return strings.Join(names, ", ")
}
