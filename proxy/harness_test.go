package proxy

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/aopguard/aopguard/internal/h1"
	"github.com/aopguard/aopguard/internal/testpki"
	"github.com/aopguard/aopguard/tlsconfig"
)

// guard bounds every wait in these tests so that a broken proxy fails a test
// instead of hanging it. It is never asserted against.
const guard = 10 * time.Second

// maxHeaderBytes is the configured header limit run.go turns into
// http.Server.MaxHeaderBytes (config.DefaultMaxHeaderBytes).
const maxHeaderBytes = 64 << 10

// testPKI is every certificate the proxy tests use.
type testPKI struct {
	serverCA, server *testpki.Cert
	// zoneCA plays Cloudflare's origin-pull CA; caA and caB are customer
	// CAs; caX is trusted by no policy.
	zoneCA, caA, caB, caX *testpki.Cert

	clientZone, clientA, clientB, clientX *testpki.Cert
	expiredA, wrongUsageA                 *testpki.Cert
}

func newPKI(t testing.TB) *testPKI {
	t.Helper()
	p := &testPKI{
		serverCA: testpki.CA(t, "aopguard test server CA"),
		zoneCA:   testpki.CA(t, "Origin Pull CA (test)"),
		caA:      testpki.CA(t, "customer CA A"),
		caB:      testpki.CA(t, "customer CA B"),
		caX:      testpki.CA(t, "stranger CA X"),
	}
	p.server = testpki.Server(t, p.serverCA, "*.example.com", "*.w.example.com", "*.example.net", "*.example.org", "localhost", "127.0.0.1")
	p.clientZone = testpki.Client(t, p.zoneCA, "edge")
	p.clientA = testpki.Client(t, p.caA, "client A")
	p.clientB = testpki.Client(t, p.caB, "client B")
	p.clientX = testpki.Client(t, p.caX, "client X")
	now := time.Now()
	p.expiredA = testpki.New(t, p.caA, testpki.Options{CN: "expired A", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
	p.wrongUsageA = testpki.New(t, p.caA, testpki.Options{CN: "server-usage A", EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return p
}

// fingerprint is computed here independently of tlsconfig.
func fingerprint(c *testpki.Cert) string {
	sum := sha256.Sum256(c.Cert.Raw)
	return hex.EncodeToString(sum[:])
}

// ---- counters ----

type fakeCounter struct{ n atomic.Int64 }

func (c *fakeCounter) Inc() { c.n.Add(1) }

// counters hands out fake counters keyed by their labels joined with "|".
type counters struct {
	mu sync.Mutex
	m  map[string]*fakeCounter
}

func newCounters() *counters { return &counters{m: map[string]*fakeCounter{}} }

func (cs *counters) counter(labels ...string) tlsconfig.Counter {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	k := strings.Join(labels, "|")
	c, ok := cs.m[k]
	if !ok {
		c = &fakeCounter{}
		cs.m[k] = c
	}
	return c
}

func (cs *counters) get(labels ...string) int64 {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if c, ok := cs.m[strings.Join(labels, "|")]; ok {
		return c.n.Load()
	}
	return 0
}

// nonzero returns every counter that counted something.
func (cs *counters) nonzero() map[string]int64 {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	out := map[string]int64{}
	for k, c := range cs.m {
		if n := c.n.Load(); n != 0 {
			out[k] = n
		}
	}
	return out
}

// ---- log sink ----

// logSink collects zerolog's JSON lines (and any other text) and lets a test
// wait for a line that is written after the client already has its response.
type logSink struct {
	mu     sync.Mutex
	buf    []byte
	raw    []string
	lines  []map[string]any
	notify chan struct{}
}

func newLogSink() *logSink { return &logSink{notify: make(chan struct{})} }

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = append(s.buf, p...)
	if !bytes.HasSuffix(s.buf, []byte("\n")) {
		s.buf = append(s.buf, '\n')
	}
	for {
		i := bytes.IndexByte(s.buf, '\n')
		if i < 0 {
			break
		}
		line := string(s.buf[:i])
		s.buf = s.buf[i+1:]
		s.raw = append(s.raw, line)
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			s.lines = append(s.lines, m)
		}
	}
	close(s.notify)
	s.notify = make(chan struct{})
	return len(p), nil
}

func (s *logSink) dump() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.raw, "\n")
}

func (s *logSink) find(match func(map[string]any) bool) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, m := range s.lines {
		if match(m) {
			out = append(out, m)
		}
	}
	return out
}

// wait returns the first line match accepts, waiting for it to be written.
func (s *logSink) wait(t testing.TB, what string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	timeout := time.NewTimer(guard)
	defer timeout.Stop()
	for {
		s.mu.Lock()
		for _, m := range s.lines {
			if match(m) {
				s.mu.Unlock()
				return m
			}
		}
		ch := s.notify
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timeout.C:
			t.Fatalf("no log line %s; log so far:\n%s", what, s.dump())
		}
	}
}

func isAccess(path string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["message"] == "request" && m["path"] == path }
}

// access waits for the access line of the request for path and checks that
// it is the only one.
func (s *logSink) access(t testing.TB, path string) map[string]any {
	t.Helper()
	m := s.wait(t, "for request "+path, isAccess(path))
	if n := len(s.find(isAccess(path))); n != 1 {
		t.Errorf("%d access lines for %s, want 1", n, path)
	}
	return m
}

// ---- upstreams ----

// seen is what an upstream received.
type seen struct {
	Host   string
	Path   string
	Header http.Header
}

// upstream is a real HTTP server on 127.0.0.1 (or a unix socket) that
// records every request. Its default handler answers "upstream <name>",
// with the status from the "status" query parameter if any.
type upstream struct {
	name string
	srv  *httptest.Server
	url  string

	mu   sync.Mutex
	reqs []seen
}

func newUpstream(t testing.TB, name string, h http.HandlerFunc) *upstream {
	return startUpstream(t, name, h, nil)
}

// newUnixUpstream serves on a unix socket in a short temporary directory
// (socket paths are limited to ~100 bytes, t.TempDir's can be longer).
func newUnixUpstream(t testing.TB, name string, h http.HandlerFunc) *upstream {
	t.Helper()
	dir, err := os.MkdirTemp("", "aopg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "up.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	u := startUpstream(t, name, h, ln)
	u.url = "unix://" + path
	return u
}

func startUpstream(t testing.TB, name string, h http.HandlerFunc, ln net.Listener) *upstream {
	t.Helper()
	u := &upstream{name: name}
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) {
			status := http.StatusOK
			if s := r.URL.Query().Get("status"); s != "" {
				status, _ = strconv.Atoi(s)
			}
			w.Header().Set("X-Upstream", name)
			w.WriteHeader(status)
			io.WriteString(w, "upstream "+name+"\n")
		}
	}
	u.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.reqs = append(u.reqs, seen{Host: r.Host, Path: r.URL.Path, Header: r.Header.Clone()})
		u.mu.Unlock()
		h(w, r)
	}))
	if ln != nil {
		u.srv.Listener.Close()
		u.srv.Listener = ln
	}
	u.srv.Start()
	u.url = u.srv.URL
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) hits() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

// got returns the requests the upstream received for path.
func (u *upstream) got(path string) []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []seen
	for _, s := range u.reqs {
		if s.Path == path {
			out = append(out, s)
		}
	}
	return out
}

// one returns the single request the upstream received for path.
func (u *upstream) one(t testing.TB, path string) seen {
	t.Helper()
	got := u.got(path)
	if len(got) != 1 {
		t.Fatalf("upstream %s received %d requests for %s, want 1", u.name, len(got), path)
	}
	return got[0]
}

// closedURL returns an http URL on 127.0.0.1 where nothing listens.
func closedURL(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// ---- the proxy under test ----

type harnessConfig struct {
	zone  tlsconfig.PolicySpec
	hosts []tlsconfig.PolicySpec
	// timeout is passed to Upstreams.Routes; default guard.
	timeout time.Duration
	// strict, trustCF and requireSource set the matching Set options and
	// Routes fields; source classifies peers (nil: everyone is "other").
	strict, trustCF, requireSource bool
	source                         func(netip.Addr) string
	// idleTimeout and readHeaderTimeout set the Server's; defaults 120s
	// and guard.
	idleTimeout, readHeaderTimeout time.Duration
	// upstreamRoots verifies h2:// upstreams (nil: the system's roots).
	upstreamRoots *x509.CertPool
}

// harness runs the proxy wired as cmd/aopguard/run.go wires it: a
// tlsconfig.Server listener on 127.0.0.1, a proxy Server with the proxy
// Handler, Routes from Upstreams.
type harness struct {
	pki      *testPKI
	addr     string
	routes   atomic.Pointer[Routes]
	log      *logSink
	verifies *counters // host|mode|result|action
	requests *counters // host|class; also duration|host, upstream|host and upstream_error|host|kind
	observed chan tlsconfig.Request
	srv      *h1.Server
}

// meters is a fake Meters keeping everything in the harness's counters:
// histograms count their observations.
type meters struct{ cs *counters }

func (m meters) Requests(host, class string) tlsconfig.Counter { return m.cs.counter(host, class) }
func (m meters) RequestDuration(host string) Observer {
	return observer{m.cs.counter("duration", host)}
}
func (m meters) UpstreamDuration(host string) Observer {
	return observer{m.cs.counter("upstream", host)}
}
func (m meters) UpstreamErrors(host, kind string) tlsconfig.Counter {
	return m.cs.counter("upstream_error", host, kind)
}

type observer struct{ c tlsconfig.Counter }

func (o observer) Observe(v float64) {
	if v < 0 {
		panic("negative latency observed")
	}
	o.c.Inc()
}

func newHarness(t testing.TB, pki *testPKI, cfg harnessConfig) *harness {
	t.Helper()
	h := &harness{pki: pki, log: newLogSink(), verifies: newCounters(), requests: newCounters(), observed: make(chan tlsconfig.Request, 1024)}
	tickets, err := tlsconfig.NewTicketKeys()
	if err != nil {
		t.Fatal(err)
	}
	serverCert := pki.server.TLS()
	set, err := tlsconfig.NewSet(cfg.zone, cfg.hosts, tlsconfig.Options{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &serverCert, nil },
		Tickets:        tickets,
		StrictHosts:    cfg.strict,
		Counter: func(l tlsconfig.Labels) tlsconfig.Counter {
			// Aggregated over reason and source: the tests count by
			// host|mode|result|action.
			return h.verifies.counter(l.Host, l.Mode, l.Result, l.Action)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	logger := zerolog.New(h.log)
	ups := NewUpstreams(logger, meters{h.requests})
	ups.h2.roots = cfg.upstreamRoots
	timeout := cfg.timeout
	if timeout == 0 {
		timeout = guard
	}
	rt, err := ups.Routes(set, timeout)
	if err != nil {
		t.Fatal(err)
	}
	rt.TrustCloudflareHeaders, rt.RequireCloudflareSource = cfg.trustCF, cfg.requireSource
	h.routes.Store(rt)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	tlsSrv := tlsconfig.NewServer(func() *tlsconfig.Set { return h.routes.Load().Set }, tlsconfig.ServerOptions{Source: cfg.source, Sink: harnessSink{h}})
	handler := NewHandler(h.routes.Load, logger, HandlerOptions{Sink: harnessSink{h}})
	srv := h1.NewServer(h1.Options{
		Handler:           handler,
		ConnContext:       ConnContext,
		Refused:           handler.Refused,
		MaxHeaderBytes:    maxHeaderBytes,
		ReadHeaderTimeout: cmp.Or(cfg.readHeaderTimeout, guard),
		IdleTimeout:       cmp.Or(cfg.idleTimeout, 120*time.Second),
		ErrorLog:          log.New(h.log, "http: ", 0),
	})
	h.srv = srv
	done := make(chan error, 1)
	go func() { done <- srv.Serve(tlsSrv.Listener(ln)) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != http.ErrServerClosed {
			t.Errorf("Serve: %v", err)
		}
		if t.Failed() {
			t.Logf("proxy log:\n%s", h.log.dump())
		}
	})
	return h
}

// clientOpts describe one client connection.
type clientOpts struct {
	sni  string        // TLS server name
	cert *testpki.Cert // client certificate; nil presents none
	h2   bool          // HTTP/2 instead of HTTP/1.1
	// sessions, if set, lets connections resume TLS sessions.
	sessions tls.ClientSessionCache
}

func (h *harness) tlsConfig(o clientOpts, nextProtos ...string) *tls.Config {
	c := &tls.Config{ServerName: o.sni, RootCAs: testpki.Pool(h.pki.serverCA), NextProtos: nextProtos, ClientSessionCache: o.sessions}
	if o.cert != nil {
		// Present the certificate whatever CAs the server advertises
		// (crypto/tls's default selection would withhold a certificate
		// the server's CertificateRequest does not list).
		tc := o.cert.TLS()
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tc, nil }
	}
	return c
}

// client returns an http.Client whose every connection goes to the proxy
// (whatever the URL's host) with the given SNI and certificate, and a count
// of the connections it made.
func (h *harness) client(t testing.TB, o clientOpts) (*http.Client, *atomic.Int32) {
	dials := new(atomic.Int32)
	var protos http.Protocols
	if o.h2 {
		protos.SetHTTP2(true)
	} else {
		protos.SetHTTP1(true)
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, "tcp", h.addr)
		},
		TLSClientConfig:    h.tlsConfig(o),
		Protocols:          &protos,
		DisableCompression: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: guard}, dials
}

// dial opens one TLS connection to the proxy.
func (h *harness) dial(t testing.TB, o clientOpts, nextProtos ...string) *tls.Conn {
	t.Helper()
	d := &net.Dialer{Timeout: guard}
	c, err := tls.DialWithDialer(d, "tcp", h.addr, h.tlsConfig(o, nextProtos...))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(guard))
	t.Cleanup(func() { c.Close() })
	return c
}

// response is a fully read response.
type response struct {
	status int
	proto  int
	header http.Header
	body   string
	te     []string
}

// get sends a request through c; host, if not empty, overrides the Host
// header (the URL's host otherwise).
func get(t testing.TB, c *http.Client, method, url, host string, hdr http.Header) response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if host != "" {
		req.Host = host
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: res.StatusCode, proto: res.ProtoMajor, header: res.Header, body: string(b), te: res.TransferEncoding}
}

// rawRoundTrip writes a hand-made HTTP/1.1 request on c and reads the
// response from br.
func rawRoundTrip(t testing.TB, c net.Conn, br *bufio.Reader, raw string) response {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: res.StatusCode, proto: res.ProtoMajor, header: res.Header, body: string(b), te: res.TransferEncoding}
}

// verifyHeaders returns every header of h that looks like a verification
// header, whatever its case.
func verifyHeaders(h http.Header) map[string][]string {
	out := map[string][]string{}
	for k, v := range h {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "x-client-verify") || strings.HasPrefix(lk, "x-client-cert-") {
			out[k] = v
		}
	}
	return out
}

// wantVerifyHeaders checks that h carries exactly the verification headers
// the proxy sets for verify and fp ("" for no fingerprint header).
func wantVerifyHeaders(t testing.TB, h http.Header, verify, fp string) {
	t.Helper()
	want := map[string][]string{HeaderVerify: {verify}}
	if fp != "" {
		want[HeaderFingerprint] = []string{fp}
	}
	got := verifyHeaders(h)
	if len(got) != len(want) {
		t.Errorf("upstream verification headers = %q, want %q", got, want)
		return
	}
	for k, v := range want {
		if !slices.Equal(got[k], v) {
			t.Errorf("upstream verification headers = %q, want %q", got, want)
			return
		}
	}
}

func cas(cs ...*testpki.Cert) []*x509.Certificate {
	out := make([]*x509.Certificate, len(cs))
	for i, c := range cs {
		out[i] = c.Cert
	}
	return out
}

func discardLogger() zerolog.Logger { return zerolog.New(io.Discard) }

// waitFor polls cond until it holds, failing the test after guard.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// harnessSink counts verdicts as aopguard's sink does (each handshake's
// once, each request's only when the request was judged anew) and passes
// requests on to the test.
type harnessSink struct{ h *harness }

func (s harnessSink) Handshake(hs tlsconfig.Handshake) {
	if p, v, ok := hs.Judged(); ok {
		p.Count(v, hs.Info.Source)
	}
}

func (s harnessSink) Request(r tlsconfig.Request) {
	if r.Rejudged {
		r.Policy.Count(r.Verdict, r.Conn.Source)
	}
	select {
	case s.h.observed <- r:
	default: // a test that does not read them
	}
}
