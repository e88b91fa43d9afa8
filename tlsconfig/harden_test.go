package tlsconfig

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aopguard/aopguard/internal/testpki"
)

func TestParseHash(t *testing.T) {
	sum := sha256.Sum256([]byte("x"))
	hexs := hex.EncodeToString(sum[:])
	var colons []string
	for i := 0; i < len(hexs); i += 2 {
		colons = append(colons, strings.ToUpper(hexs[i:i+2]))
	}
	for _, in := range []string{hexs, strings.Join(colons, ":"), base64.StdEncoding.EncodeToString(sum[:]), " " + hexs + " "} {
		got, err := ParseHash(in)
		if err != nil || got != sum {
			t.Errorf("ParseHash(%q) = %x, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "abc", hexs[:62], hexs + "00", "not base64 at all!!"} {
		if _, err := ParseHash(bad); err == nil {
			t.Errorf("ParseHash(%q) accepted", bad)
		}
	}
}

func TestAllowRules(t *testing.T) {
	f := getFixture(t)
	leaf := testpki.New(t, f.zoneCA, testpki.Options{CN: "edge.example.net", DNS: []string{"Origin-Pull.Example.NET"}})
	other := f.zoneLeaf
	der := sha256.Sum256(leaf.Cert.Raw)
	spki := sha256.Sum256(leaf.Cert.RawSubjectPublicKeyInfo)
	tests := []struct {
		name  string
		rules AllowRules
		want  bool
	}{
		{"no rules", AllowRules{}, true},
		{"sha256", AllowRules{SHA256: [][32]byte{der}}, true},
		{"spki", AllowRules{SPKISHA256: [][32]byte{spki}}, true},
		{"dns case-insensitive", AllowRules{DNS: []string{"origin-pull.example.net"}}, true},
		{"cn exact", AllowRules{CN: []string{"edge.example.net"}}, true},
		{"cn is case-sensitive", AllowRules{CN: []string{"EDGE.example.net"}}, false},
		{"any rule may match", AllowRules{CN: []string{"nope"}, DNS: []string{"origin-pull.example.net"}}, true},
		{"none matches", AllowRules{SHA256: [][32]byte{sha256.Sum256(other.Cert.Raw)}, CN: []string{"nope"}}, false},
		{"dns is not a suffix match", AllowRules{DNS: []string{"example.net"}}, false},
	}
	for _, tt := range tests {
		if got := tt.rules.Match(leaf.Cert); got != tt.want {
			t.Errorf("%s: Match = %v, want %v", tt.name, got, tt.want)
		}
	}
	// Through Verify: a chain that verifies but matches no rule is not_allowed.
	set := mustSet(t, PolicySpec{Mode: Require, CAs: caList(f.zoneCA), Allow: AllowRules{CN: []string{"edge.example.net"}}}, nil, mustTickets(t), nil)
	if v := set.Zone().Verify([]*x509.Certificate{other.Cert}); v.Result != Failed || v.Reason != ReasonNotAllowed {
		t.Errorf("other leaf: %+v, want not_allowed", v)
	}
	if v := set.Zone().Verify([]*x509.Certificate{leaf.Cert}); v.Result != Success {
		t.Errorf("allowed leaf: %+v", v)
	}
	if v := set.Zone().Verify([]*x509.Certificate{f.untrusted.Cert}); v.Reason != ReasonUntrusted {
		t.Errorf("untrusted leaf judged %q before the chain: allow rules apply after verification", v.Reason)
	}
}

func makeCRL(t *testing.T, ca *testpki.Cert, revoked ...*testpki.Cert) *x509.RevocationList {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: time.Now().Add(24 * time.Hour)}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: c.Cert.SerialNumber, RevocationTime: time.Now()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

func TestCRL(t *testing.T) {
	f := getFixture(t)
	revokedLeaf := testpki.Client(t, f.zoneCA, "revoked client")
	inter := testpki.New(t, f.zoneCA, testpki.Options{CN: "revoked intermediate", IsCA: true})
	underInter := testpki.Client(t, inter, "leaf under revoked intermediate")
	crl := makeCRL(t, f.zoneCA, revokedLeaf, inter)
	for _, mode := range []Mode{Require, LogOnly} {
		set := mustSet(t, PolicySpec{Mode: mode, CAs: caList(f.zoneCA), CRLs: []*x509.RevocationList{crl}}, nil, mustTickets(t), nil)
		p := set.Zone()
		if v := p.Verify([]*x509.Certificate{revokedLeaf.Cert}); v.Result != Failed || v.Reason != ReasonRevoked {
			t.Errorf("%s: revoked leaf: %+v", mode, v)
		}
		if v := p.Verify([]*x509.Certificate{underInter.Cert, inter.Cert}); v.Reason != ReasonRevoked {
			t.Errorf("%s: leaf under a revoked intermediate: %+v", mode, v)
		}
		if v := p.Verify([]*x509.Certificate{f.zoneLeaf.Cert}); v.Result != Success {
			t.Errorf("%s: unrevoked leaf: %+v", mode, v)
		}
	}
	// A CRL signed by a CA the policy does not trust cannot revoke
	// anything: refusing it at load beats silently ignoring it.
	foreign := makeCRL(t, f.otherCA, f.zoneLeaf)
	_, err := NewSet(PolicySpec{Mode: Require, CAs: caList(f.zoneCA), CRLs: []*x509.RevocationList{foreign}}, nil, Options{Tickets: mustTickets(t)})
	if err == nil || !strings.Contains(err.Error(), "not signed by any CA of this policy") {
		t.Fatalf("foreign CRL: %v", err)
	}
	// Handshake: a revoked leaf is refused under require.
	set := mustSet(t, PolicySpec{Mode: Require, CAs: caList(f.zoneCA), CRLs: []*x509.RevocationList{crl}}, nil, mustTickets(t), nil)
	h := newHarness(t, set, ServerOptions{})
	res := h.dial(clientConfig(t, tls.VersionTLS13, "", tlsCert(revokedLeaf)))
	if res.err() == nil {
		t.Fatal("revoked leaf admitted")
	}
	if o := h.next(); !strings.Contains(o.err.Error(), "revoked") {
		t.Fatalf("observed %v", o.err)
	}
}

func TestStrictHostsLookup(t *testing.T) {
	f := getFixture(t)
	cas := caList(f.zoneCA)
	hosts := []PolicySpec{{Name: "a.example.com", Mode: Require, CAs: cas}, {Name: "*.w.example.com", Mode: Require, CAs: cas}}
	tests := []struct {
		strict, refuseNoSNI bool
		name                string
		known               bool
	}{
		{false, false, "unknown.example.com", true},
		{true, false, "unknown.example.com", false},
		{true, false, "a.example.com", true},
		{true, false, "A.EXAMPLE.COM.", true},
		{true, false, "x.w.example.com", true},
		{true, false, "w.example.com", false},
		{true, false, "", true},
		{false, true, "", false},
		{true, true, "", false},
		{true, false, "127.0.0.1", false},
	}
	for _, tt := range tests {
		set := mustSet(t, PolicySpec{Mode: Require, CAs: cas}, hosts, mustTickets(t), nil)
		set.strict, set.refuseNoSNI = tt.strict, tt.refuseNoSNI
		if _, known := set.Lookup(tt.name); known != tt.known {
			t.Errorf("strict=%v refuseNoSNI=%v Lookup(%q) known=%v, want %v", tt.strict, tt.refuseNoSNI, tt.name, known, tt.known)
		}
	}
}

func TestStrictHostsHandshake(t *testing.T) {
	f := getFixture(t)
	cas := caList(f.zoneCA)
	newSet := func(opts Options) *Set {
		opts.Tickets = mustTickets(t)
		opts.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &f.server, nil }
		s, err := NewSet(PolicySpec{Mode: Require, CAs: cas}, []PolicySpec{{Name: "a.example.com", Mode: Require, CAs: cas}}, opts)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tests := []struct {
		name string
		opts Options
		sni  string
		ok   bool
	}{
		{"strict, known name", Options{StrictHosts: true}, "a.example.com", true},
		{"strict, unknown name", Options{StrictHosts: true}, "unknown.example.com", false},
		{"strict, no SNI allowed", Options{StrictHosts: true}, "", true},
		{"no SNI refused", Options{RefuseNoSNI: true}, "", false},
		{"lenient, unknown name", Options{}, "unknown.example.com", true},
	}
	for _, ver := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		for _, tt := range tests {
			h := newHarness(t, newSet(tt.opts), ServerOptions{})
			res := h.dial(clientConfig(t, ver, tt.sni, tlsCert(f.zoneLeaf)))
			o := h.next()
			if tt.ok {
				if res.err() != nil || o.err != nil {
					t.Errorf("%s (%x): %v / %v", tt.name, ver, res.err(), o.err)
				}
				continue
			}
			if res.hsErr == nil || !strings.Contains(res.hsErr.Error(), "unrecognized name") {
				t.Errorf("%s (%x): client saw %v, want the unrecognized_name alert", tt.name, ver, res.err())
			}
			var uh *UnknownHostError
			if e, ok := o.err.(*UnknownHostError); !ok || e.SNI != tt.sni {
				t.Errorf("%s (%x): observed %T %v, want %T", tt.name, ver, o.err, o.err, uh)
			}
			if o.info.Policy != nil {
				t.Errorf("%s: refused connection has policy %s", tt.name, o.info.Policy.Name())
			}
			h.noneAccepted()
		}
	}
}

// TestMaxConnections: at the bound the listener stops accepting; a closed
// connection frees its slot.
func TestMaxConnections(t *testing.T) {
	f := getFixture(t)
	set := mustSet(t, PolicySpec{Mode: LogOnly, CAs: caList(f.zoneCA)}, nil, mustTickets(t), nil)
	h := newHarness(t, set, ServerOptions{MaxConnections: 1})
	first, err := tls.Dial("tcp", h.ln.Addr().String(), clientConfig(t, tls.VersionTLS13, "", nil))
	if err != nil {
		t.Fatal(err)
	}
	h.nextAccepted()
	// The second connection reaches the kernel's backlog but no handshake
	// happens while the first is open.
	raw, err := net.Dial("tcp", h.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	second := tls.Client(raw, clientConfig(t, tls.VersionTLS13, "", nil))
	done := make(chan error, 1)
	go func() { done <- second.Handshake() }()
	select {
	case err := <-done:
		t.Fatalf("second handshake completed while the first connection held the only slot: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	first.Close()
	if err := <-done; err != nil {
		t.Fatalf("second handshake after the first closed: %v", err)
	}
	h.nextAccepted()
}

// TestMaxHandshakes: with every handshake slot held by a client that sent
// its ClientHello and then stalls, a new connection is closed after
// waiting half of HandshakeTimeout, before the stalled handshake times out.
func TestMaxHandshakes(t *testing.T) {
	f := getFixture(t)
	set := mustSet(t, PolicySpec{Mode: LogOnly, CAs: caList(f.zoneCA)}, nil, mustTickets(t), nil)
	h := newHarness(t, set, ServerOptions{MaxHandshakes: 1, HandshakeTimeout: time.Second})
	stallHandshake(t, h.ln.Addr().String())
	res := h.dial(clientConfig(t, tls.VersionTLS13, "", nil))
	if res.err() == nil {
		t.Fatal("handshake completed although the only slot was held")
	}
	var sawOverload bool
	for i := 0; i < 2; i++ {
		if o := h.next(); o.err == ErrOverloaded {
			sawOverload = true
		}
	}
	if !sawOverload {
		t.Fatal("no ErrOverloaded observed")
	}
}

// stallHandshake opens a connection that sends a real ClientHello and then
// never reads the server's answer, so its handshake holds a slot until
// HandshakeTimeout. It returns once the server has answered the hello.
func stallHandshake(t *testing.T, addr string) {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	sent, done := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(done); raw.Close() })
	go tls.Client(&helloOnly{Conn: raw, sent: sent, done: done}, clientConfig(t, tls.VersionTLS13, "", nil)).Handshake()
	<-sent
	// The server has the hello once it answers (its first byte arrives).
	raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := raw.Read(make([]byte, 1)); err != nil {
		t.Fatalf("no answer to the stalled ClientHello: %v", err)
	}
}

// helloOnly lets crypto/tls's client write its ClientHello, then blocks its
// reads until done is closed.
type helloOnly struct {
	net.Conn
	sent, done chan struct{}
	once       sync.Once
}

func (c *helloOnly) Read([]byte) (int, error) {
	c.once.Do(func() { close(c.sent) })
	<-c.done
	return 0, net.ErrClosed
}

func TestTLS12SuitesAreForwardSecretAEAD(t *testing.T) {
	set := mustSet(t, PolicySpec{Mode: Off}, nil, mustTickets(t), nil)
	h := newHarness(t, set, ServerOptions{})
	cfg := clientConfig(t, tls.VersionTLS12, "", nil)
	cfg.CipherSuites = []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA}
	if res := h.dial(cfg); res.err() == nil {
		t.Fatal("a non-forward-secret or CBC suite was negotiated")
	}
	h.next()
}

// TestStaleCRL: past a CRL's NextUpdate, a policy that refuses on a stale
// CRL refuses every certificate (crl_stale); one that warns keeps using
// it. Before that moment a refusing policy caches a success only until
// NextUpdate, so the change is not hidden by the cache.
func TestStaleCRL(t *testing.T) {
	f := getFixture(t)
	next := time.Now().Add(time.Hour).Truncate(time.Second)
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(2), ThisUpdate: next.Add(-2 * time.Hour), NextUpdate: next},
		f.zoneCA.Cert, f.zoneCA.Key)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	before, after := next.Add(-time.Minute), next.Add(time.Minute)
	chain := []*x509.Certificate{f.zoneLeaf.Cert}
	for _, tc := range []struct {
		name        string
		refuse      bool
		at          time.Time
		result      Result
		reason      string
		untilCapped bool
	}{
		{"warn, fresh", false, before, Success, "", false},
		{"warn, stale", false, after, Success, "", false},
		{"refuse, fresh", true, before, Success, "", true},
		{"refuse, stale", true, after, Failed, ReasonCRLStale, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := mustSet(t, PolicySpec{Mode: Require, CAs: caList(f.zoneCA), CRLs: []*x509.RevocationList{crl}, RefuseStaleCRL: tc.refuse}, nil, mustTickets(t), nil)
			p := set.Zone()
			if !p.CRLNextUpdate().Equal(next) || p.RefusesStaleCRL() != tc.refuse {
				t.Errorf("CRLNextUpdate %v, RefusesStaleCRL %v", p.CRLNextUpdate(), p.RefusesStaleCRL())
			}
			e := p.verify(chain, tc.at)
			if e.result != tc.result || e.reason != tc.reason {
				t.Errorf("verdict %v %q, want %v %q", e.result, e.reason, tc.result, tc.reason)
			}
			if capped := e.result == Success && e.until.Equal(next); capped != tc.untilCapped {
				t.Errorf("cached until %v (CRL NextUpdate %v); capped %v, want %v", e.until, next, capped, tc.untilCapped)
			}
		})
	}
}
