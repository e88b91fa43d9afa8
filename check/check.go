// Package check probes a deployed origin over real TLS the way an attacker
// and the way Cloudflare would, and judges each answer against the
// expected Authenticated Origin Pulls enforcement. It tests the deployment
// (aopguard, nginx, Apache, anything), not aopguard's code: it needs only
// the origin's address, its hostnames and, optionally, the client
// certificate uploaded to Cloudflare.
//
// The probes, for each hostname (probe 1 once):
//
//  1. direct-ip: straight to the origin address, no SNI, no certificate;
//  2. no-cert: SNI and Host of the hostname, no certificate;
//  3. untrusted-cert: a certificate from a CA made up on the spot;
//  4. host-switch: the connection of probe 5 (SNI of the hostname, the
//     client certificate when given) asking, in its Host header, for
//     another hostname;
//  5. client-cert: the client certificate, as Cloudflare connects.
package check

import (
	"bufio"
	"context"
	"crypto/mldsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aopguard/aopguard/certs"
)

// Expect is the enforcement the deployment should have.
type Expect string

const (
	// ExpectRequire: everything but the client certificate is refused.
	ExpectRequire Expect = "require"
	// ExpectLogOnly: nothing is refused (the staged-rollout step).
	ExpectLogOnly Expect = "log-only"
)

// ParseExpect parses "require" or "log-only".
func ParseExpect(s string) (Expect, error) {
	switch Expect(s) {
	case ExpectRequire, ExpectLogOnly:
		return Expect(s), nil
	}
	return "", fmt.Errorf("%q is not one of require, log-only", s)
}

// DefaultTimeout bounds each probe: connect, handshake, request and
// response.
const DefaultTimeout = 10 * time.Second

// Options configure Run.
type Options struct {
	// Origin is the origin's address, host:port (the port defaults to 443).
	Origin string
	// Hosts are the hostnames to probe; at least one.
	Hosts []string
	// Path is the request path; default "/". Pick one the app answers
	// with 2xx, so that its answers cannot be mistaken for refusals.
	Path string
	// Client is the client certificate uploaded to Cloudflare; nil skips
	// probe 5 and makes probe 4 go without a certificate.
	Client *tls.Certificate
	// ClientCertFile and ClientKeyFile name Client's files in the curl
	// commands.
	ClientCertFile, ClientKeyFile string
	// RootCAs verify the origin's server certificate (nil: the system's
	// roots) and CAFile names them in the curl commands. Probe 1 never
	// verifies it: a direct-to-IP request has no name to check.
	RootCAs *x509.CertPool
	CAFile  string
	// Insecure skips verification of the origin's server certificate.
	Insecure bool
	// Expect is what the probes are judged against; default require.
	Expect Expect
	// Timeout bounds each probe; default DefaultTimeout.
	Timeout time.Duration
	// UserAgent is sent with every request.
	UserAgent string
}

// Outcome is what happened to a probe, in broad terms.
type Outcome string

const (
	// TLSRefused: the origin refused at the TLS layer: an alert, or the
	// connection closed before any HTTP answer (under TLS 1.3 a refused
	// client certificate shows up only when the client reads).
	TLSRefused Outcome = "tls_refused"
	// HTTP: the origin answered with an HTTP status.
	HTTP Outcome = "http"
	// Error: the probe could not be judged: no connection, a timeout, or
	// an origin certificate that did not verify.
	Error Outcome = "error"
)

// Probe is one probe's setup, result and verdict.
type Probe struct {
	Number int `json:"number"`
	// Name is direct-ip, no-cert, untrusted-cert, host-switch or
	// client-cert.
	Name string `json:"name"`
	// Host is the --host this probe belongs to ("" for direct-ip).
	Host       string `json:"host"`
	SNI        string `json:"sni"`
	HostHeader string `json:"host_header"`
	// Cert is the certificate presented: none, untrusted or client.
	Cert    string  `json:"cert"`
	Curl    string  `json:"curl"`
	Outcome Outcome `json:"outcome"`
	// Alert is the TLS alert's RFC 8446 name, e.g. certificate_required,
	// when the origin sent one.
	Alert string `json:"alert"`
	// Status is the HTTP status, when there was an answer.
	Status int `json:"status"`
	// Detail is the answer's title or first line, or the error.
	Detail   string `json:"detail"`
	Expected string `json:"expected"`
	Pass     bool   `json:"pass"`
	// Note explains the verdict where it is not obvious.
	Note string `json:"note"`
}

// Result describes the outcome in a few words, e.g. "TLS refused
// (certificate_required)" or "HTTP 200".
func (p *Probe) Result() string {
	switch p.Outcome {
	case TLSRefused:
		if p.Alert != "" {
			return "TLS refused (" + p.Alert + ")"
		}
		return "TLS refused (connection closed)"
	case HTTP:
		return "HTTP " + strconv.Itoa(p.Status)
	}
	return "error"
}

// Report is the result of Run.
type Report struct {
	Origin string   `json:"origin"`
	Expect Expect   `json:"expect"`
	Pass   bool     `json:"pass"`
	Probes []Probe  `json:"probes"`
	Notes  []string `json:"notes,omitempty"`
}

// Failed returns the probes that did not meet the expectation.
func (r *Report) Failed() []Probe {
	var out []Probe
	for _, p := range r.Probes {
		if !p.Pass {
			out = append(out, p)
		}
	}
	return out
}

// Probe names.
const (
	DirectIP      = "direct-ip"
	NoCert        = "no-cert"
	UntrustedCert = "untrusted-cert"
	HostSwitch    = "host-switch"
	ClientCert    = "client-cert"
)

// madeUpLabel is the first label of the other hostname probe 4 asks for
// when only one --host is given.
const madeUpLabel = "aopguard-check-probe"

// Run probes the origin and judges every answer. The error is for setup
// problems only (bad options); unreachable origins and wrong answers are
// failed probes in the Report.
func Run(ctx context.Context, o Options) (*Report, error) {
	r, err := newRunner(o)
	if err != nil {
		return nil, err
	}
	return r.run(ctx), nil
}

type runner struct {
	o         Options
	origin    string // host:port
	originIP  string // the host part
	untrusted tls.Certificate
}

func newRunner(o Options) (*runner, error) {
	if o.Expect == "" {
		o.Expect = ExpectRequire
	}
	if _, err := ParseExpect(string(o.Expect)); err != nil {
		return nil, fmt.Errorf("expect: %w", err)
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Path == "" {
		o.Path = "/"
	}
	if !strings.HasPrefix(o.Path, "/") {
		return nil, fmt.Errorf("path %q: must start with /", o.Path)
	}
	if len(o.Hosts) == 0 {
		return nil, errors.New("at least one host name is required")
	}
	origin, err := NormalizeOrigin(o.Origin)
	if err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(origin)
	// The untrusted certificate is made fresh for each run, from a CA
	// nobody has ever seen.
	ca, err := certs.NewCA(certs.IssueOptions{CommonName: "aopguard check untrusted CA", Days: 1})
	if err != nil {
		return nil, fmt.Errorf("making the untrusted CA: %w", err)
	}
	leaf, err := certs.IssueClient(ca, certs.IssueOptions{CommonName: "aopguard-check-untrusted", Days: 1})
	if err != nil {
		return nil, fmt.Errorf("making the untrusted certificate: %w", err)
	}
	return &runner{o: o, origin: origin, originIP: host, untrusted: leaf.TLSCertificate()}, nil
}

// NormalizeOrigin returns addr as host:port, adding port 443 when it has
// none.
func NormalizeOrigin(addr string) (string, error) {
	if addr == "" {
		return "", errors.New("the origin address is required, e.g. 203.0.113.7:443")
	}
	if strings.Contains(addr, "://") {
		return "", fmt.Errorf("origin %q: want host:port, not a URL", addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		// No port: a bare name, IPv4 or IPv6 address.
		h := strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
		if strings.ContainsAny(h, "[]/ ") || (strings.Contains(h, ":") && net.ParseIP(h) == nil) {
			return "", fmt.Errorf("origin %q: want host:port", addr)
		}
		return net.JoinHostPort(h, "443"), nil
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("origin %q: bad port %q", addr, port)
	}
	if host == "" {
		return "", fmt.Errorf("origin %q: no host", addr)
	}
	return net.JoinHostPort(host, port), nil
}

// attempt is one connection and request.
type attempt struct {
	sni, host string
	cert      string // none, untrusted, client
	// anyName skips the check of the server certificate's name (for the
	// made-up hostname of probe 4's baseline, which no certificate has).
	anyName bool
}

// answer is what one attempt got.
type answer struct {
	outcome Outcome
	alert   string
	status  int
	detail  string
	body    string
}

func (r *runner) run(ctx context.Context) *Report {
	rep := &Report{Origin: r.origin, Expect: r.o.Expect}
	direct := attempt{host: r.directHost(), cert: "none"}
	d := r.probe(ctx, DirectIP, "", direct)
	var perHost [][]*Probe
	refs := map[string]*answer{} // probe 5 answers by host
	answers := map[*Probe]*answer{d.p: d.a}
	baselines := map[*Probe]*answer{}
	for i, h := range r.o.Hosts {
		other := r.otherHost(i)
		var ps []*Probe
		for _, a := range []struct {
			name string
			at   attempt
		}{
			{NoCert, attempt{sni: h, host: h, cert: "none"}},
			{UntrustedCert, attempt{sni: h, host: h, cert: "untrusted"}},
			{HostSwitch, attempt{sni: h, host: other, cert: r.clientOrNone()}},
			{ClientCert, attempt{sni: h, host: h, cert: "client"}},
		} {
			if a.at.cert == "client" && r.o.Client == nil {
				continue
			}
			pr := r.probe(ctx, a.name, h, a.at)
			ps = append(ps, pr.p)
			answers[pr.p] = pr.a
			if a.name == ClientCert {
				refs[h] = pr.a
			}
			if a.name == HostSwitch {
				// How does the other host answer this certificate on a
				// connection of its own? Reaching it over this one is a
				// bypass only if it would refuse it there.
				baselines[pr.p] = r.try(ctx, attempt{sni: other, host: other, cert: a.at.cert, anyName: true})
			}
		}
		perHost = append(perHost, ps)
	}

	r.judge(d.p, d.a, nil, nil)
	rep.Probes = append(rep.Probes, *d.p)
	for i, ps := range perHost {
		for _, p := range ps {
			r.judge(p, answers[p], refs[r.o.Hosts[i]], baselines[p])
			rep.Probes = append(rep.Probes, *p)
		}
	}
	rep.Pass = len(rep.Probes) > 0
	for _, p := range rep.Probes {
		rep.Pass = rep.Pass && p.Pass
	}
	if len(r.o.Hosts) == 1 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("only one --host: the host-switch probe asks for %s, a made-up name next to %s", r.otherHost(0), r.o.Hosts[0]))
	}
	if r.o.Client != nil && isMLDSA(r.o.Client) {
		rep.Notes = append(rep.Notes, "the client certificate is post-quantum (ML-DSA): curl and openssl on Debian 12 (OpenSSL 3.0) cannot present it, so the curl commands of the probes that use it need a curl built with OpenSSL 3.5 or later; these probes were made with Go's TLS 1.3")
	}
	if r.o.Client == nil {
		rep.Notes = append(rep.Notes, "no --client-cert: the client-cert probe (Cloudflare's way in) was skipped; pass the certificate uploaded to Cloudflare to check that it gets in")
	}
	if r.o.Expect == ExpectRequire {
		rep.Notes = append(rep.Notes, "an HTTP 4xx answer counts as refused: nginx completes the handshake and answers 400 (\"No required SSL certificate was sent\", \"The SSL certificate error\") instead of sending a TLS alert")
	}
	return rep
}

type probed struct {
	p *Probe
	a *answer
}

func (r *runner) probe(ctx context.Context, name, host string, at attempt) probed {
	p := &Probe{Name: name, Host: host, SNI: at.sni, HostHeader: at.host, Cert: at.cert, Curl: r.curl(at)}
	switch name {
	case DirectIP:
		p.Number = 1
	case NoCert:
		p.Number = 2
	case UntrustedCert:
		p.Number = 3
	case HostSwitch:
		p.Number = 4
	case ClientCert:
		p.Number = 5
	}
	a := r.try(ctx, at)
	p.Outcome, p.Alert, p.Status, p.Detail = a.outcome, a.alert, a.status, a.detail
	return probed{p, a}
}

func (r *runner) clientOrNone() string {
	if r.o.Client != nil {
		return "client"
	}
	return "none"
}

// directHost is the Host header of a direct-to-IP request, as curl sends
// it: the address, with the port unless it is 443.
func (r *runner) directHost() string {
	host, port, _ := net.SplitHostPort(r.origin)
	if port == "443" {
		if strings.Contains(host, ":") {
			return "[" + host + "]"
		}
		return host
	}
	return r.origin
}

// otherHost is the hostname probe 4 asks for over host i's connection:
// the next --host, or a made-up name under the same parent domain.
func (r *runner) otherHost(i int) string {
	if len(r.o.Hosts) > 1 {
		return r.o.Hosts[(i+1)%len(r.o.Hosts)]
	}
	h := strings.TrimPrefix(r.o.Hosts[i], "*.")
	if labels := strings.Split(h, "."); len(labels) > 2 {
		h = strings.Join(labels[1:], ".")
	}
	return madeUpLabel + "." + h
}

// try makes one connection and one request, bounded by the timeout.
func (r *runner) try(ctx context.Context, at attempt) *answer {
	ctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
	defer cancel()
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", r.origin)
	if err != nil {
		return failed("connecting to %s: %v", r.origin, err)
	}
	defer raw.Close()
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	cfg := &tls.Config{
		ServerName: at.sni,
		NextProtos: []string{"http/1.1"},
		// Verification is done by VerifyConnection, so that probe 1 can
		// skip the name check and errors are recognisable.
		InsecureSkipVerify: true,
		VerifyConnection:   r.verifyServer(at.sni, at.anyName),
	}
	var cert *tls.Certificate
	switch at.cert {
	case "client":
		cert = r.o.Client
	case "untrusted":
		cert = &r.untrusted
	}
	if cert != nil {
		// Present the certificate whatever CAs the server lists in its
		// CertificateRequest, as Cloudflare and curl do: crypto/tls would
		// otherwise withhold it and hide a misconfigured CA list.
		c := *cert
		cfg.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if isMLDSA(&c) && cri.Version < tls.VersionTLS13 {
				return nil, errMLDSANeedsTLS13
			}
			return &c, nil
		}
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return classify(err, "TLS handshake")
	}
	u := &url.URL{Scheme: "https", Host: at.host, Path: r.o.Path}
	if i := strings.IndexByte(r.o.Path, '?'); i >= 0 {
		u.Path, u.RawQuery = r.o.Path[:i], r.o.Path[i+1:]
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return failed("building the request: %v", err)
	}
	req.Host = at.host
	req.Close = true
	req.Header.Set("User-Agent", r.userAgent())
	req.Header.Set("Accept", "*/*")
	if err := req.Write(tc); err != nil {
		// The origin may have refused the certificate and closed after the
		// (TLS 1.3) handshake finished on our side: look for its alert.
		if _, rerr := tc.Read(make([]byte, 1)); rerr != nil {
			if a := classify(rerr, "request"); a.outcome == TLSRefused && a.alert != "" {
				return a
			}
		}
		return classify(err, "sending the request")
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), req)
	if err != nil {
		return classify(err, "reading the response")
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return &answer{outcome: HTTP, status: resp.StatusCode, detail: summary(string(body)), body: string(body)}
}

// errMLDSANeedsTLS13 is the client-side failure of presenting an ML-DSA
// certificate to an origin that negotiated TLS 1.2: crypto/tls would
// silently send no certificate instead, and the probe would look like a
// plain refusal.
var errMLDSANeedsTLS13 = errors.New("the client certificate has an ML-DSA key, which can only be presented over TLS 1.3, and the origin negotiated TLS 1.2: the origin (or whatever terminates TLS in front of it) must allow TLS 1.3")

// isMLDSA reports whether c's key is post-quantum ML-DSA.
func isMLDSA(c *tls.Certificate) bool {
	_, ok := c.PrivateKey.(*mldsa.PrivateKey)
	return ok
}

func (r *runner) userAgent() string {
	if r.o.UserAgent != "" {
		return r.o.UserAgent
	}
	return "aopguard-check"
}

// serverCertError is the origin's certificate failing verification.
type serverCertError struct{ err error }

func (e *serverCertError) Error() string { return e.err.Error() }
func (e *serverCertError) Unwrap() error { return e.err }

// verifyServer checks the origin's certificate chain against the roots,
// and its name against sni unless anyName is set. An empty sni (probe 1)
// checks nothing, as curl -k.
func (r *runner) verifyServer(sni string, anyName bool) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if r.o.Insecure || sni == "" || len(cs.PeerCertificates) == 0 {
			return nil
		}
		opts := x509.VerifyOptions{Roots: r.o.RootCAs, DNSName: sni, Intermediates: x509.NewCertPool()}
		if anyName {
			opts.DNSName = ""
		}
		for _, c := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(c)
		}
		if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
			return &serverCertError{err}
		}
		return nil
	}
}

func failed(format string, args ...any) *answer {
	return &answer{outcome: Error, detail: fmt.Sprintf(format, args...)}
}

// classify turns a handshake or read error into an answer.
func classify(err error, stage string) *answer {
	var sce *serverCertError
	if errors.As(err, &sce) {
		return failed("the origin's server certificate did not verify: %v (pass --ca with the CA that issued it, or --insecure)", sce.err)
	}
	if name, ok := AlertName(err); ok {
		return &answer{outcome: TLSRefused, alert: name, detail: err.Error()}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		return failed("%s: timed out", stage)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return &answer{outcome: TLSRefused, detail: fmt.Sprintf("%s: connection closed by the origin without a TLS alert (%v)", stage, err)}
	}
	return failed("%s: %v", stage, err)
}

// summary is a short description of a response body: an HTML title (as in
// nginx's "400 No required SSL certificate was sent"), else the first line.
func summary(body string) string {
	lower := strings.ToLower(body)
	if i := strings.Index(lower, "<title>"); i >= 0 {
		if j := strings.Index(lower[i:], "</title>"); j > 0 {
			return clip(strings.TrimSpace(body[i+len("<title>") : i+j]))
		}
	}
	line, _, _ := strings.Cut(strings.TrimSpace(body), "\n")
	return clip(strings.TrimSpace(line))
}

func clip(s string) string {
	if len(s) > 100 {
		return s[:97] + "..."
	}
	return s
}
