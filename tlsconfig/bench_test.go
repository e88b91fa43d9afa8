package tlsconfig

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aopguard/aopguard/internal/testpki"
)

// Benchmarks of the admission hot path: picking a Policy for a server name
// (every ClientHello and every request) and verifying a client chain (every
// handshake, resumed ones included). Run with `make bench`; nothing here
// asserts on timing.

// benchPKI is a Cloudflare-shaped PKI: an RSA-4096 origin-pull CA (what
// Cloudflare's shared CA is) and an RSA-2048 client leaf under it. RSA key
// generation takes seconds, so it is built once per test binary.
type benchPKI struct {
	ca, leaf *testpki.Cert
	chain    []*x509.Certificate // as a TLS peer presents it: the leaf alone
}

var (
	benchOnce sync.Once
	benchFix  *benchPKI
)

func getBenchPKI(b *testing.B) *benchPKI {
	b.Helper()
	benchOnce.Do(func() {
		ca := testpki.New(b, nil, testpki.Options{CN: "Origin Pull CA (bench)", IsCA: true, RSABits: 4096,
			NotAfter: time.Now().Add(365 * 24 * time.Hour)})
		leaf := testpki.New(b, ca, testpki.Options{CN: "origin-pull.example.net", RSABits: 2048})
		benchFix = &benchPKI{ca: ca, leaf: leaf, chain: []*x509.Certificate{leaf.Cert}}
	})
	if benchFix == nil {
		b.Fatal("bench PKI could not be built")
	}
	return benchFix
}

// benchSet has a zone policy, 50 exact hosts and 10 wildcards: a mid-sized
// multi-tenant origin.
func benchSet(b *testing.B) *Set {
	b.Helper()
	f := getBenchPKI(b)
	cas := []*x509.Certificate{f.ca.Cert}
	var hosts []PolicySpec
	for i := range 50 {
		hosts = append(hosts, PolicySpec{Name: "app" + strconv.Itoa(i) + ".example.com", Mode: Require, CAs: cas})
	}
	for i := range 10 {
		hosts = append(hosts, PolicySpec{Name: "*.tenant" + strconv.Itoa(i) + ".example.com", Mode: Require, CAs: cas})
	}
	s, err := NewSet(PolicySpec{Mode: Require, CAs: cas}, hosts, Options{Tickets: mustTickets(b)})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func BenchmarkSetMatch(b *testing.B) {
	s := benchSet(b)
	for _, bc := range []struct{ name, host string }{
		{"exact", "app42.example.com"},
		{"exact-mixed-case", "App42.Example.COM"},
		{"wildcard", "shop.tenant7.example.com"},
		{"zone", "unknown.example.org"},
		{"no-sni", ""},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if s.Match(bc.host) == nil {
					b.Fatal("no policy")
				}
			}
		})
	}
}

func BenchmarkSetLookup(b *testing.B) {
	s := benchSet(b)
	for _, bc := range []struct{ name, host string }{
		{"exact", "app42.example.com"},
		{"wildcard", "shop.tenant7.example.com"},
		{"zone", "unknown.example.org"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := s.Lookup(bc.host); !ok {
					b.Fatal("refused")
				}
			}
		})
	}
}

// BenchmarkVerify: "cold" empties the Policy's cache before each call, so
// every iteration pays the full chain check (the RSA-4096 signature of the
// CA over the leaf, plus building the chain); "cached" is every handshake
// after the first from the same edge certificate. "cached-parallel" adds
// contention from concurrent handshakes (GOMAXPROCS goroutines).
func BenchmarkVerify(b *testing.B) {
	f := getBenchPKI(b)
	newRequire := func(b *testing.B) *Policy {
		s, err := NewSet(PolicySpec{Mode: Require, CAs: []*x509.Certificate{f.ca.Cert}}, nil, Options{Tickets: mustTickets(b)})
		if err != nil {
			b.Fatal(err)
		}
		return s.Zone()
	}
	b.Run("cold", func(b *testing.B) {
		p := newRequire(b)
		b.ReportAllocs()
		for b.Loop() {
			p.cache.mu.Lock()
			p.cache.m = nil
			p.cache.mu.Unlock()
			if v := p.Verify(f.chain); v.Result != Success {
				b.Fatalf("verdict %+v", v)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		p := newRequire(b)
		p.Verify(f.chain)
		b.ReportAllocs()
		for b.Loop() {
			if v := p.Verify(f.chain); v.Result != Success {
				b.Fatalf("verdict %+v", v)
			}
		}
	})
	b.Run("cached-parallel", func(b *testing.B) {
		p := newRequire(b)
		p.Verify(f.chain)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if v := p.Verify(f.chain); v.Result != Success {
					b.Errorf("verdict %+v", v)
					return
				}
			}
		})
	})
	b.Run("untrusted-cached", func(b *testing.B) {
		// A scanner re-presenting the same wrong certificate: refused from
		// the cache, not by a new chain build.
		p := newRequire(b)
		stranger := getFixture(b).untrusted.Cert
		chain := []*x509.Certificate{stranger}
		p.Verify(chain)
		b.ReportAllocs()
		for b.Loop() {
			if v := p.Verify(chain); v.Result != Failed {
				b.Fatalf("verdict %+v", v)
			}
		}
	})
}

// BenchmarkVerifyMLDSA is BenchmarkVerify's cold and cached cases for an
// ML-DSA-65 leaf under an ML-DSA-65 CA, under client_cert_signatures:
// post-quantum (the chain check plus the post-quantum check).
func BenchmarkVerifyMLDSA(b *testing.B) {
	ca := testpki.MLDSACA(b, "ML-DSA CA (bench)", 65)
	chain := []*x509.Certificate{testpki.MLDSAClient(b, ca, "edge", 65).Cert}
	s, err := NewSet(PolicySpec{Mode: Require, Signatures: PostQuantum, CAs: []*x509.Certificate{ca.Cert}}, nil, Options{Tickets: mustTickets(b)})
	if err != nil {
		b.Fatal(err)
	}
	p := s.Zone()
	b.Run("cold", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			p.cache.mu.Lock()
			p.cache.m = nil
			p.cache.mu.Unlock()
			if v := p.Verify(chain); v.Result != Success || !v.PostQuantum {
				b.Fatalf("verdict %+v", v)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		p.Verify(chain)
		b.ReportAllocs()
		for b.Loop() {
			if v := p.Verify(chain); v.Result != Success {
				b.Fatalf("verdict %+v", v)
			}
		}
	})
}

// BenchmarkListenerHandshake runs TLS 1.3 handshakes through a Server's
// listener on loopback, resumed (what most of Cloudflare's connections
// are) and full: the accept path's own cost (reading the ClientHello
// before the slot, handing it to crypto/tls, the client's certificate
// flight, Close) shows against the handshake's. The client closes first,
// as Cloudflare does.
func BenchmarkListenerHandshake(b *testing.B) {
	f := getFixture(b)
	set := mustSet(b, PolicySpec{Mode: Require, CAs: caList(f.zoneCA)}, nil, mustTickets(b), nil)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ln := NewServer(func() *Set { return set }, ServerOptions{MaxHandshakes: 64}).Listener(inner)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.Write([]byte{'x'})
				io.Copy(io.Discard, c) // until the client's close_notify
				c.Close()
			}()
		}
	}()
	for _, resume := range []bool{true, false} {
		name := map[bool]string{true: "resumed", false: "full"}[resume]
		b.Run(name, func(b *testing.B) {
			cfg := clientConfig(b, tls.VersionTLS13, "", tlsCert(f.zoneLeaf))
			if resume {
				cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
			}
			dial := func() {
				c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
			dial() // the ticket
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				dial()
			}
		})
	}
}

// replayConn serves fixed bytes, then io.EOF; writes are discarded.
type replayConn struct {
	net.Conn // nil: only the methods below are called
	data     []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.data)
	c.data = c.data[n:]
	return n, nil
}
func (c *replayConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *replayConn) Close() error                     { return nil }
func (c *replayConn) SetReadDeadline(time.Time) error  { return nil }
func (c *replayConn) SetWriteDeadline(time.Time) error { return nil }
func (c *replayConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (c *replayConn) LocalAddr() net.Addr           { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 443} }
func (c *replayConn) SetDeadline(t time.Time) error { return nil }

// captureConn records what a client writes first and fails the handshake.
type captureConn struct {
	replayConn
	got []byte
}

func (c *captureConn) Write(p []byte) (int, error) {
	c.got = append(c.got, p...)
	return 0, io.ErrClosedPipe
}

// resumingHello returns the ClientHello of a TLS 1.3 client resuming a
// session with the zone policy: the largest one Cloudflare sends (its
// ticket carries the client's certificate), about 1.7 KB.
func resumingHello(b *testing.B) []byte {
	f := getFixture(b)
	set := mustSet(b, PolicySpec{Mode: Require, CAs: caList(f.zoneCA)}, nil, mustTickets(b), nil)
	h := newHarness(b, set, ServerOptions{})
	cfg := clientConfig(b, tls.VersionTLS13, "", tlsCert(f.zoneLeaf))
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	if _, info := h.admitted(cfg); info == nil {
		b.Fatal("not admitted")
	}
	cc := &captureConn{}
	tls.Client(cc, cfg).Handshake()
	if len(cc.got) < 1000 {
		b.Fatalf("ClientHello of %d bytes: no ticket in it", len(cc.got))
	}
	return cc.got
}

// BenchmarkPreamble reads a resuming ClientHello through the accept path
// (everything before the handshake slot), whole in one record and split
// into records of 500 bytes.
func BenchmarkPreamble(b *testing.B) {
	hello := resumingHello(b)
	split := func(rec []byte, size int) []byte {
		var out []byte
		for body := rec[5:]; len(body) > 0; {
			n := min(size, len(body))
			out = append(out, 0x16, 0x03, 0x01, byte(n>>8), byte(n))
			out = append(out, body[:n]...)
			body = body[n:]
		}
		return out
	}
	s := NewServer(func() *Set { return nil }, ServerOptions{})
	for _, bc := range []struct {
		name string
		in   []byte
	}{
		{"one-record", hello},
		{"500-byte-records", split(hello, 500)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				t := &trackedConn{Conn: &replayConn{data: bc.in}}
				if err := s.preamble(context.Background(), t); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
