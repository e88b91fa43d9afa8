package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/aopguard/aopguard/certs"
	"github.com/aopguard/aopguard/check"
)

const checkUsage = `Usage: aopguard check --origin ADDR --host NAME [--host NAME ...]
                      [--client-cert FILE --client-key FILE] [--ca FILE | --insecure]
                      [--expect require|log-only] [--path PATH] [--timeout DURATION] [--json]

Probes a deployed origin (aopguard, nginx, Apache, anything) over real TLS
the way an attacker and the way Cloudflare would, and checks that
Authenticated Origin Pulls is enforced as expected. For each --host:

  1 direct-ip       straight to the origin address: no SNI, no certificate (once)
  2 no-cert         SNI and Host of the hostname, no certificate
  3 untrusted-cert  a certificate from a CA made up on the spot
  4 host-switch     the connection of probe 5 asking (Host header) for another
                    hostname: the next --host, or a made-up name under the same
                    parent domain when there is only one
  5 client-cert     the --client-cert uploaded to Cloudflare (when given)

--expect require: 1-3 must be refused, at the TLS handshake or with an HTTP
4xx (nginx answers 400 instead of a TLS alert; a 4xx that the client-cert
probe gets too is the app's answer and does not count); 4 must not reach the
other host unless that host accepts the certificate on its own connection
(421, 4xx or a TLS refusal pass); 5 must get an HTTP answer that is not a
certificate refusal (not 421, not a 4xx about the certificate).
--expect log-only: 1-3 must get through (an HTTP answer that is not a
refusal), 4 any HTTP answer, 5 as above.

The origin's server certificate is verified against --ca, or the system's
roots when --ca is not given; --insecure skips that (common: origin
certificates from Cloudflare's Origin CA are trusted only by Cloudflare).
Probe 1 never verifies it: a direct-to-IP request has no name to check.

Every probe is printed with the equivalent curl command. Exit status: 0 when
every probe met the expectation, 1 when one did not (or the origin could not
be reached), 2 for a bad invocation.

Flags:
`

// hostsFlag collects repeated --host values (commas also separate).
type hostsFlag []string

func (h *hostsFlag) String() string { return strings.Join(*h, ",") }
func (h *hostsFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*h = append(*h, s)
		}
	}
	return nil
}

func checkCommand(args []string, stdout, stderr io.Writer) int {
	opts, asJSON, err := parseCheckFlags(args, stdout)
	if err != nil {
		if isHelp(err) {
			return exitOK
		}
		fmt.Fprintf(stderr, "aopguard check: %v\n", err)
		return exitCode(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	rep, err := check.Run(ctx, opts)
	if err != nil {
		fmt.Fprintf(stderr, "aopguard check: %v\n", err)
		return exitConfig
	}
	if asJSON {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "aopguard check: %v\n", err)
		return exitFail
	}
	if !rep.Pass {
		return exitFail
	}
	return exitOK
}

func parseCheckFlags(args []string, stdout io.Writer) (check.Options, bool, error) {
	var (
		o                 check.Options
		hosts             hostsFlag
		expect, caFile    string
		certFile, keyFile string
		origin, path      string
		insecure, asJSON  bool
		timeout           time.Duration
	)
	fs := newCommandFlags("aopguard check", checkUsage, stdout)
	invocation := func(err error) error { return &exitError{exitConfig, err} }
	fs.StringVar(&origin, "origin", "", "probe the origin at `ADDR` (host:port; port 443 when left out), e.g. 203.0.113.7:443")
	fs.Var(&hosts, "host", "probe hostname `NAME` (repeatable, or comma-separated)")
	fs.StringVar(&certFile, "client-cert", "", "the client certificate uploaded to Cloudflare, PEM `FILE` (enables probe 5)")
	fs.StringVar(&keyFile, "client-key", "", "its private key, PEM `FILE`")
	fs.StringVar(&caFile, "ca", "", "verify the origin's server certificate against the CAs in PEM `FILE` (default: the system's roots)")
	fs.BoolVar(&insecure, "insecure", false, "do not verify the origin's server certificate (like curl -k)")
	fs.StringVar(&expect, "expect", string(check.ExpectRequire), "judge the probes against `MODE`: require or log-only")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	fs.DurationVar(&timeout, "timeout", check.DefaultTimeout, "give up on a probe after `DURATION`")
	fs.StringVar(&path, "path", "/", "request `PATH`; pick one the app answers with 2xx")
	if err := fs.Parse(args); err != nil {
		return o, false, err
	}
	if fs.NArg() > 0 {
		return o, false, invocation(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	var err error
	if o.Origin, err = check.NormalizeOrigin(origin); err != nil {
		return o, false, invocation(fmt.Errorf("--origin: %w", err))
	}
	if len(hosts) == 0 {
		return o, false, invocation(errors.New("--host is required: the hostname(s) Cloudflare proxies to this origin"))
	}
	for _, h := range hosts {
		if err := checkProbeHost(h); err != nil {
			return o, false, invocation(fmt.Errorf("--host: %w", err))
		}
		o.Hosts = append(o.Hosts, strings.ToLower(strings.TrimSuffix(h, ".")))
	}
	if o.Expect, err = check.ParseExpect(expect); err != nil {
		return o, false, invocation(fmt.Errorf("--expect: %w", err))
	}
	if timeout <= 0 {
		return o, false, invocation(fmt.Errorf("--timeout: %v is not positive", timeout))
	}
	o.Timeout = timeout
	if !strings.HasPrefix(path, "/") {
		return o, false, invocation(fmt.Errorf("--path: %q must start with /", path))
	}
	o.Path = path
	if (certFile == "") != (keyFile == "") {
		return o, false, invocation(errors.New("--client-cert and --client-key go together"))
	}
	if certFile != "" {
		pair, err := certs.LoadKeyPair(certFile, keyFile)
		if err != nil {
			return o, false, invocation(fmt.Errorf("--client-cert: %w", err))
		}
		o.Client, o.ClientCertFile, o.ClientKeyFile = &pair, certFile, keyFile
	}
	if insecure && caFile != "" {
		return o, false, invocation(errors.New("--ca and --insecure contradict each other: pick one"))
	}
	o.Insecure = insecure
	if caFile != "" {
		cas, err := certs.LoadBundle(caFile)
		if err != nil {
			return o, false, invocation(fmt.Errorf("--ca: %w", err))
		}
		o.RootCAs = x509.NewCertPool()
		for _, c := range cas {
			o.RootCAs.AddCert(c)
		}
		o.CAFile = caFile
	}
	o.UserAgent = "aopguard-check/" + version
	return o, asJSON, nil
}

// checkProbeHost accepts a DNS name (what Cloudflare sends as SNI and
// Host); not an IP address, a URL or a name with a port.
func checkProbeHost(h string) error {
	switch {
	case strings.Contains(h, "://"):
		return fmt.Errorf("%q: want a hostname, not a URL", h)
	case net.ParseIP(h) != nil:
		return fmt.Errorf("%q is an IP address; probe 1 already goes straight to the origin address", h)
	case strings.ContainsAny(h, ":/ *"):
		return fmt.Errorf("%q: want a plain hostname such as app.example.com", h)
	case !strings.Contains(h, "."):
		return fmt.Errorf("%q: want a fully qualified hostname such as app.example.com", h)
	}
	return nil
}
