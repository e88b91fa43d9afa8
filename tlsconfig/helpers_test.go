package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"github.com/aopguard/aopguard/cfips"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aopguard/aopguard/internal/testpki"
)

// fixture is the PKI shared by the tests of this package; it is read-only
// once built.
type fixture struct {
	zoneCA, hostCA, otherCA *testpki.Cert
	// Client leaves: valid under zoneCA, valid under hostCA, from an
	// unrelated CA, expired, and serverAuth-only (all but the first two
	// issued by zoneCA where it matters).
	zoneLeaf, hostLeaf, untrusted, expired, wrongUsage *testpki.Cert

	server      tls.Certificate
	serverRoots *x509.CertPool
}

var (
	fixOnce sync.Once
	fix     *fixture
)

// serverNames are the names the test server certificate is valid for.
var serverNames = []string{
	"localhost", "127.0.0.1",
	"a.example.com", "b.example.com", "h.example.com", "unknown.example.com", "*.w.example.com",
}

func getFixture(t testing.TB) *fixture {
	t.Helper()
	fixOnce.Do(func() {
		now := time.Now()
		f := &fixture{
			zoneCA:  testpki.CA(t, "zone CA"),
			hostCA:  testpki.CA(t, "host CA"),
			otherCA: testpki.CA(t, "other CA"),
		}
		f.zoneLeaf = testpki.Client(t, f.zoneCA, "zone client")
		f.hostLeaf = testpki.Client(t, f.hostCA, "host client")
		f.untrusted = testpki.Client(t, f.otherCA, "stranger")
		f.expired = testpki.New(t, f.zoneCA, testpki.Options{CN: "expired client", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})
		f.wrongUsage = testpki.New(t, f.zoneCA, testpki.Options{CN: "server-only", EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		serverCA := testpki.CA(t, "server CA")
		f.server = testpki.Server(t, serverCA, serverNames...).TLS()
		f.serverRoots = testpki.Pool(serverCA)
		fix = f
	})
	if fix == nil {
		t.Fatal("test PKI could not be built")
	}
	return fix
}

func mustTickets(t testing.TB) *TicketKeys {
	t.Helper()
	k, err := NewTicketKeys()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func caList(cs ...*testpki.Cert) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range cs {
		out = append(out, c.Cert)
	}
	return out
}

// newPolicy compiles a lone zone policy.
func newPolicy(t testing.TB, mode Mode, cas ...*testpki.Cert) *Policy {
	t.Helper()
	s, err := NewSet(PolicySpec{Mode: mode, CAs: caList(cas...)}, nil, Options{Tickets: mustTickets(t)})
	if err != nil {
		t.Fatal(err)
	}
	return s.Zone()
}

// mustSet builds a Set serving the fixture's server certificate.
func mustSet(t testing.TB, zone PolicySpec, hosts []PolicySpec, keys *TicketKeys, rec *counterRec) *Set {
	t.Helper()
	f := getFixture(t)
	opts := Options{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &f.server, nil },
		Tickets:        keys,
	}
	if rec != nil {
		opts.Counter = rec.counter
	}
	s, err := NewSet(zone, hosts, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// counterRec is a fake metrics registry: it records every label set a Set
// resolves and counts increments per label set.
type counterRec struct {
	mu       sync.Mutex
	resolved []string
	m        map[string]*fakeCounter
}

type fakeCounter struct{ n atomic.Int64 }

func (c *fakeCounter) Inc() { c.n.Add(1) }

func labels(host, mode, result, action string) string {
	return strings.Join([]string{host, mode, result, action}, "/")
}

// counter records the full label set as resolved and hands out one fake
// per (host, mode, result, action) for peers of source "other" (every test
// peer is on loopback) and per (..., source) otherwise, so tests can count
// without spelling out every reason.
func (r *counterRec) counter(l Labels) Counter {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resolved = append(r.resolved, strings.Join([]string{l.Host, l.Mode, l.Result, l.Reason, l.Action, l.Source}, "/"))
	k := labels(l.Host, l.Mode, l.Result, l.Action)
	if l.Source != cfips.Other {
		k += "/" + l.Source
	}
	if r.m == nil {
		r.m = map[string]*fakeCounter{}
	}
	c, ok := r.m[k]
	if !ok {
		c = &fakeCounter{}
		r.m[k] = c
	}
	return c
}

// resolvedSorted returns every resolution, duplicates included.
func (r *counterRec) resolvedSorted() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := append([]string(nil), r.resolved...)
	sort.Strings(out)
	return out
}

// counts returns the non-zero counters.
func (r *counterRec) counts() map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int64{}
	for k, c := range r.m {
		if n := c.n.Load(); n != 0 {
			out[k] = n
		}
	}
	return out
}

// observed is one outcome the Server gave its Sink.
type observed struct {
	info   ConnInfo
	remote net.Addr
	err    error
}

// harness is a Server on 127.0.0.1 whose current Set can be swapped. Every
// accepted connection reports its Info, writes one byte (so that a TLS 1.3
// client processes the session tickets sent after the handshake) and waits
// for the client to close.
type harness struct {
	t        testing.TB
	cur      atomic.Pointer[Set]
	ln       net.Listener
	observed chan observed
	accepted chan *ConnInfo
}

func newHarness(t testing.TB, set *Set, opts ServerOptions) *harness {
	t.Helper()
	h := &harness{t: t, observed: make(chan observed, 64), accepted: make(chan *ConnInfo, 64)}
	h.cur.Store(set)
	opts.Sink = h
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.ln = NewServer(func() *Set { return h.cur.Load() }, opts).Listener(inner)
	t.Cleanup(func() { h.ln.Close() })
	go h.serve()
	return h
}

// Handshake records an outcome and counts its verdict, as aopguard's
// sink does: once, under the policy Judged names.
func (h *harness) Handshake(hs Handshake) {
	if p, v, ok := hs.Judged(); ok {
		p.Count(v, hs.Info.Source)
	}
	h.observed <- observed{info: *hs.Info, remote: hs.Remote, err: hs.Err}
}

// Request is not reached: the harness serves no HTTP.
func (h *harness) Request(Request) {}

func (h *harness) serve() {
	for {
		c, err := h.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var info *ConnInfo
			if i := Info(c); i != nil {
				cp := *i
				info = &cp
			}
			h.accepted <- info
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write([]byte{'x'}); err != nil {
				return
			}
			io.Copy(io.Discard, c)
		}()
	}
}

// dialResult is what the client saw.
type dialResult struct {
	state   tls.ConnectionState
	hsErr   error // handshake error
	readErr error // error reading the server's first byte
}

func (r dialResult) err() error {
	if r.hsErr != nil {
		return r.hsErr
	}
	return r.readErr
}

// dial runs one client connection: handshake, then read one byte.
func (h *harness) dial(cfg *tls.Config) dialResult {
	h.t.Helper()
	raw, err := net.Dial("tcp", h.ln.Addr().String())
	if err != nil {
		h.t.Fatal(err)
	}
	// A deadline against hangs only; no test depends on its length.
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	c := tls.Client(raw, cfg)
	defer c.Close()
	if err := c.Handshake(); err != nil {
		return dialResult{hsErr: err}
	}
	r := dialResult{state: c.ConnectionState()}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(c, buf); err != nil {
		r.readErr = err
	} else if buf[0] != 'x' {
		h.t.Fatalf("server sent %q", buf)
	}
	return r
}

// next returns the next Observe call.
func (h *harness) next() observed {
	h.t.Helper()
	select {
	case o := <-h.observed:
		return o
	case <-time.After(10 * time.Second):
		h.t.Fatal("no Observe call")
	}
	return observed{}
}

// nextAccepted returns the Info of the next connection Accept returned.
func (h *harness) nextAccepted() *ConnInfo {
	h.t.Helper()
	select {
	case i := <-h.accepted:
		if i == nil {
			h.t.Fatal("Info(conn) = nil for an accepted connection")
		}
		return i
	case <-time.After(10 * time.Second):
		h.t.Fatal("no connection accepted")
	}
	return nil
}

// noneAccepted checks that no connection was handed to Accept. Called after
// the handshake's Observe, which precedes the hand-off.
func (h *harness) noneAccepted() {
	h.t.Helper()
	select {
	case i := <-h.accepted:
		h.t.Fatalf("a refused connection was accepted: %+v", i)
	default:
	}
}

// clientConfig makes a client for one TLS version. sni "" dials without a
// server name (the certificate is checked against 127.0.0.1, which crypto/tls
// does not send as SNI). cert nil presents no certificate; otherwise cert is
// presented whatever CAs the server advertises.
func clientConfig(t testing.TB, version uint16, sni string, cert *tls.Certificate) *tls.Config {
	f := getFixture(t)
	cfg := &tls.Config{
		RootCAs:    f.serverRoots,
		ServerName: sni,
		MinVersion: version,
		MaxVersion: version,
	}
	if sni == "" {
		cfg.ServerName = "127.0.0.1"
	}
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return cfg
}

func tlsCert(c *testpki.Cert, chain ...*testpki.Cert) *tls.Certificate {
	x := c.TLS(chain...)
	return &x
}

var versions = []struct {
	name string
	v    uint16
}{
	{"TLS1.2", tls.VersionTLS12},
	{"TLS1.3", tls.VersionTLS13},
}

// tcpPair returns both ends of a TCP connection on 127.0.0.1, closed when
// the test ends.
func tcpPair(t testing.TB) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return server, client
}

// listenAndDial serves set on inner through a Server's listener and dials
// it; the raw client connection has a deadline against hangs only. Both
// close when the test ends.
func listenAndDial(t testing.TB, set *Set, inner net.Listener) (net.Listener, net.Conn) {
	t.Helper()
	ln := NewServer(func() *Set { return set }, ServerOptions{}).Listener(inner)
	t.Cleanup(func() { ln.Close() })
	raw, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	return ln, raw
}

// zoneClientConn serves a require-mode zone policy on inner through a
// Server's listener, connects a TLS 1.3 client with the zone's leaf
// certificate and returns both sides of the accepted connection.
func zoneClientConn(t *testing.T, inner net.Listener) (*Conn, *tls.Conn) {
	t.Helper()
	f := getFixture(t)
	set := mustSet(t, PolicySpec{Mode: Require, CAs: caList(f.zoneCA)}, nil, mustTickets(t), nil)
	ln, raw := listenAndDial(t, set, inner)
	client := tls.Client(raw, clientConfig(t, tls.VersionTLS13, "", tlsCert(f.zoneLeaf)))
	go client.Handshake()
	return acceptOne(t, ln), client
}
