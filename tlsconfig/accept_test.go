package tlsconfig

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/aopguard/aopguard/cfips"
)

// dialRaw connects to h and writes pre (a PROXY header, garbage) before
// anything else; a deadline guards against hangs only.
func dialRaw(t *testing.T, h *harness, pre []byte) net.Conn {
	t.Helper()
	raw, err := net.Dial("tcp", h.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	if len(pre) > 0 {
		if _, err := raw.Write(pre); err != nil {
			t.Fatal(err)
		}
	}
	return raw
}

// proxyHeader renders a PROXY header with go-proxyproto's writer, as a
// load balancer would send it.
func proxyHeader(t *testing.T, version byte, src, dst string) []byte {
	t.Helper()
	s, d := net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)), net.TCPAddrFromAddrPort(netip.MustParseAddrPort(dst))
	b, err := proxyproto.HeaderProxyFromAddrs(version, s, d).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func localHeader(t *testing.T) []byte {
	t.Helper()
	b, err := (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// handshakeAfter runs a TLS client over raw (after whatever was written on
// it) and reads the server's first byte, like harness.dial.
func handshakeAfter(raw net.Conn, cfg *tls.Config) error {
	c := tls.Client(raw, cfg)
	if err := c.Handshake(); err != nil {
		return err
	}
	_, err := io.ReadFull(c, make([]byte, 1))
	return err
}

// TestProxyProtocol: a trusted balancer's v1 and v2 headers make the
// address they carry the client for everything downstream (ConnInfo,
// source classification, RemoteAddr); a header from anyone else, a
// missing, slow or malformed header close the connection before TLS.
func TestProxyProtocol(t *testing.T) {
	f := getFixture(t)
	set := mustSet(t, PolicySpec{Mode: LogOnly, CAs: caList(f.zoneCA)}, nil, mustTickets(t), nil)
	cloudflare := netip.MustParsePrefix("203.0.113.0/24") // stands for Cloudflare's ranges
	source := func(a netip.Addr) string {
		if cloudflare.Contains(a) {
			return cfips.Cloudflare
		}
		return cfips.Other
	}
	trusted := newHarness(t, set, ServerOptions{Source: source,
		ProxyProtocol: &ProxyProtocol{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Timeout: 300 * time.Millisecond}})
	untrusted := newHarness(t, set, ServerOptions{Source: source,
		ProxyProtocol: &ProxyProtocol{Trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}})
	unconfigured := newHarness(t, set, ServerOptions{Source: source})
	loopback := netip.MustParseAddr("127.0.0.1")

	admitted := []struct {
		name       string
		header     []byte
		remote     string // want RemoteAddr
		source     string
		viaBalance bool
	}{
		{"v1 TCP4", proxyHeader(t, 1, "203.0.113.7:40001", "192.0.2.1:443"), "203.0.113.7:40001", cfips.Cloudflare, true},
		{"v2 TCP4", proxyHeader(t, 2, "203.0.113.8:40002", "192.0.2.1:443"), "203.0.113.8:40002", cfips.Cloudflare, true},
		{"v1 TCP6", proxyHeader(t, 1, "[2001:db8::7]:40003", "[2001:db8::1]:443"), "[2001:db8::7]:40003", cfips.Other, true},
		{"v2 TCP6", proxyHeader(t, 2, "[2001:db8::8]:40004", "[2001:db8::1]:443"), "[2001:db8::8]:40004", cfips.Other, true},
		{"v2 LOCAL (the balancer's health check)", localHeader(t), "", cfips.Other, false},
		{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), "", cfips.Other, false},
	}
	for _, tc := range admitted {
		for _, ver := range versions {
			t.Run(tc.name+"/"+ver.name, func(t *testing.T) {
				raw := dialRaw(t, trusted, tc.header)
				if err := handshakeAfter(raw, clientConfig(t, ver.v, "", tlsCert(f.zoneLeaf))); err != nil {
					t.Fatalf("handshake after the header: %v", err)
				}
				o := trusted.next()
				info := trusted.nextAccepted()
				want := tc.remote
				if want == "" {
					want = raw.LocalAddr().String()
				}
				if o.err != nil || o.remote.String() != want {
					t.Errorf("observed remote %v, err %v; want %s", o.remote, o.err, want)
				}
				if info.Remote != netip.MustParseAddrPort(want).Addr() || info.Source != tc.source {
					t.Errorf("ConnInfo remote %v source %s; want %s %s", info.Remote, info.Source, want, tc.source)
				}
				if info.Proxy.IsValid() != tc.viaBalance || (tc.viaBalance && info.Proxy != loopback) {
					t.Errorf("ConnInfo.Proxy = %v", info.Proxy)
				}
				if info.Verdict.Result != Success {
					t.Errorf("verdict %+v", info.Verdict)
				}
			})
		}
	}

	refused := []struct {
		name   string
		h      *harness
		send   []byte
		tls    bool // then start a TLS handshake
		reason string
	}{
		{"trusted peer, no header", trusted, nil, true, RefusedProxyMissing},
		{"trusted peer, silent", trusted, nil, false, RefusedProxyMissing},
		// go-proxyproto wants a v1 line in one read (the spec allows
		// dropping partial headers); a v2 header may trickle in until the
		// timeout.
		{"trusted peer, v1 header cut short", trusted, []byte("PROXY TCP4 203.0.113.9 "), false, RefusedProxyInvalid},
		{"trusted peer, v2 header cut short", trusted, proxyHeader(t, 2, "203.0.113.7:1", "192.0.2.1:443")[:20], false, RefusedProxyMissing},
		{"trusted peer, malformed v1", trusted, []byte("PROXY TCP4 not-an-address 192.0.2.1 1 2\r\n"), true, RefusedProxyInvalid},
		{"trusted peer, v2 with a bad version", trusted, append(append([]byte{}, proxyproto.SIGV2...), 0x31, 0x11, 0, 0), true, RefusedProxyInvalid},
		{"untrusted peer spoofs Cloudflare, v1", untrusted, proxyHeader(t, 1, "203.0.113.7:1", "192.0.2.1:443"), true, RefusedProxyUntrusted},
		{"untrusted peer spoofs Cloudflare, v2", untrusted, proxyHeader(t, 2, "203.0.113.7:1", "192.0.2.1:443"), true, RefusedProxyUntrusted},
		{"no proxy_protocol, v1", unconfigured, proxyHeader(t, 1, "203.0.113.7:1", "192.0.2.1:443"), true, RefusedProxyUntrusted},
		{"no proxy_protocol, v2", unconfigured, proxyHeader(t, 2, "203.0.113.7:1", "192.0.2.1:443"), true, RefusedProxyUntrusted},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			raw := dialRaw(t, tc.h, tc.send)
			var err error
			if tc.tls {
				err = handshakeAfter(raw, clientConfig(t, tls.VersionTLS13, "", tlsCert(f.zoneLeaf)))
			} else {
				_, err = io.ReadAll(raw)
			}
			if isTimeout(err) {
				t.Fatal("the server did not close the connection")
			}
			if tc.tls && err == nil {
				t.Fatal("handshake completed")
			}
			o := tc.h.next()
			var re *RefusedError
			if !errors.As(o.err, &re) || re.Reason != tc.reason {
				t.Fatalf("observed %v, want a RefusedError %s", o.err, tc.reason)
			}
			if re.Peer != loopback || o.remote.String() != raw.LocalAddr().String() {
				t.Errorf("refusal names peer %v / remote %v, want the TCP peer %v", re.Peer, o.remote, raw.LocalAddr())
			}
			if o.info.Policy != nil {
				t.Errorf("a policy was chosen: %s", o.info.Policy.Name())
			}
			tc.h.noneAccepted()
		})
	}
	// The slow header ran into the (short) header timeout.
	raw := dialRaw(t, trusted, nil)
	io.ReadAll(raw)
	if o := trusted.next(); !errors.Is(o.err, context.DeadlineExceeded) {
		t.Errorf("silent trusted peer: %v, want a deadline error", o.err)
	}
}

// TestRefusalLog: one log line per peer and reason per minute, and the
// memory of peers stays bounded.
func TestRefusalLog(t *testing.T) {
	var r refusalLog
	now := time.Unix(1_000_000, 0)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	steps := []struct {
		peer   netip.Addr
		reason string
		at     time.Duration
		want   bool
	}{
		{a, RefusedProxyUntrusted, 0, true},
		{a, RefusedProxyUntrusted, time.Second, false},
		{a, RefusedPlainHTTP, time.Second, true},
		{b, RefusedProxyUntrusted, 2 * time.Second, true},
		{a, RefusedProxyUntrusted, 59 * time.Second, false},
		{a, RefusedProxyUntrusted, 61 * time.Second, true},
	}
	for i, s := range steps {
		if got := r.first(s.peer, s.reason, now.Add(s.at)); got != s.want {
			t.Errorf("step %d (%v %s at %v): log = %v, want %v", i, s.peer, s.reason, s.at, got, s.want)
		}
	}
	// Fill the memory with distinct peers: the next new one is not logged
	// (nor remembered) until entries are a minute old.
	base := now.Add(10 * time.Minute)
	for i := range maxRefusalPeers {
		r.first(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), RefusedNotTLS, base)
	}
	if len(r.last) > maxRefusalPeers {
		t.Fatalf("%d entries remembered, bound %d", len(r.last), maxRefusalPeers)
	}
	late := netip.MustParseAddr("198.51.100.1")
	if r.first(late, RefusedNotTLS, base.Add(2*time.Second)) {
		t.Error("a new peer was logged with the memory full of recent ones")
	}
	if !r.first(late, RefusedNotTLS, base.Add(refusalLogEvery+2*time.Second)) {
		t.Error("a new peer was not logged after the old entries aged out")
	}
	if len(r.last) > maxRefusalPeers {
		t.Fatalf("%d entries remembered, bound %d", len(r.last), maxRefusalPeers)
	}
}

func TestRefusedErrorText(t *testing.T) {
	for _, r := range RefusedReasons {
		if _, ok := refusedText[r]; !ok {
			t.Errorf("reason %s has no text", r)
		}
	}
	e := &RefusedError{Reason: RefusedNoHello, Err: context.DeadlineExceeded}
	if e.Error() != "aopguard: no ClientHello: context deadline exceeded" || !errors.Is(e, context.DeadlineExceeded) {
		t.Errorf("%q", e)
	}
}

// TestPlainHTTPToTLSPort: plain HTTP gets a 400 over plain HTTP saying the
// port speaks HTTPS, like nginx; other non-TLS bytes are closed.
func TestPlainHTTPToTLSPort(t *testing.T) {
	set := mustSet(t, PolicySpec{Mode: Off}, nil, mustTickets(t), nil)
	h := newHarness(t, set, ServerOptions{})
	for _, req := range []string{
		"GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
		"POST /form HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 5\r\n\r\nhello",
		"PUT /x HTTP/1.0\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	} {
		t.Run(strings.Fields(req)[0], func(t *testing.T) {
			raw := dialRaw(t, h, []byte(req))
			br := bufio.NewReader(raw)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no HTTP answer: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "this port speaks HTTPS") || !resp.Close {
				t.Errorf("answer %d %q (close %v)", resp.StatusCode, body, resp.Close)
			}
			raw.(*net.TCPConn).CloseWrite() // done sending, as curl is: the server's lingering close ends
			if _, err := br.ReadByte(); err == nil || isTimeout(err) {
				t.Errorf("connection not closed after the answer: %v", err)
			}
			var re *RefusedError
			if o := h.next(); !errors.As(o.err, &re) || re.Reason != RefusedPlainHTTP {
				t.Errorf("observed %v", o.err)
			}
		})
	}
	t.Run("binary", func(t *testing.T) {
		raw := dialRaw(t, h, []byte{0x00, 0x01, 0x02, 0xff})
		if b, err := io.ReadAll(raw); len(b) != 0 || isTimeout(err) {
			t.Errorf("read %q, %v; want a close", b, err)
		}
		var re *RefusedError
		if o := h.next(); !errors.As(o.err, &re) || re.Reason != RefusedNotTLS {
			t.Errorf("observed %v", o.err)
		}
	})
}

// TestIdleConnectionsHoldNoSlot: thousands of TCP connections that send
// nothing, or a partial ClientHello, do not keep a real client out, even
// with a single handshake slot.
func TestIdleConnectionsHoldNoSlot(t *testing.T) {
	const idle, partial = 2000, 100
	raiseFileLimit(t, 2*(idle+partial)+200)
	f := getFixture(t)
	set := mustSet(t, PolicySpec{Mode: Require, CAs: caList(f.zoneCA)}, nil, mustTickets(t), nil)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := NewServer(func() *Set { return set }, ServerOptions{MaxHandshakes: 1, HandshakeTimeout: 10 * time.Second}).Listener(inner)
	t.Cleanup(func() { ln.Close() })
	h := &harness{t: t, ln: ln, accepted: make(chan *ConnInfo, 64)}
	go h.serve()

	for i := range idle + partial {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		if i >= idle {
			// A record header promising a ClientHello, and a little of it.
			c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00})
		}
	}
	for i := range 5 {
		if res := h.dial(clientConfig(t, versions[i%2].v, "", tlsCert(f.zoneLeaf))); res.err() != nil {
			t.Fatalf("client %d with %d idle connections open: %v", i, idle+partial, res.err())
		}
		h.nextAccepted()
	}
}

// raiseFileLimit lifts the soft RLIMIT_NOFILE to at least n (within the
// hard limit) for the test, or skips it where that is impossible.
func raiseFileLimit(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		t.Skipf("RLIMIT_NOFILE hard limit %d is below the %d descriptors this test needs", lim.Max, n)
	}
	old := lim
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// TestSplitClientHelloHoldsNoSlot: a ClientHello may be split over several
// records; a connection that sent only part of one (a header-only record,
// a header split over two records, some of the body) and stalls holds no
// handshake slot, even with a single one, and what cannot be a ClientHello
// is refused at once.
func TestSplitClientHelloHoldsNoSlot(t *testing.T) {
	rec := func(payload ...byte) []byte {
		return append([]byte{0x16, 0x03, 0x01, byte(len(payload) >> 8), byte(len(payload))}, payload...)
	}
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	f := getFixture(t)
	set := mustSet(t, PolicySpec{Mode: Require, CAs: caList(f.zoneCA)}, nil, mustTickets(t), nil)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// A stalled connection holding the one slot would keep the genuine
	// client out for far longer than its 10s deadline.
	ln := NewServer(func() *Set { return set }, ServerOptions{MaxHandshakes: 1, HandshakeTimeout: 10 * time.Minute}).Listener(inner)
	t.Cleanup(func() { ln.Close() })
	h := &harness{t: t, ln: ln, accepted: make(chan *ConnInfo, 64)}
	go h.serve()

	stalled := []struct {
		name string
		sent []byte
	}{
		{"header-only record", rec(0x01, 0x00, 0x02, 0x00)},
		{"header split over two records", cat(rec(0x01, 0x00), rec(0x02, 0x00))},
		{"header and part of the body", rec(append([]byte{0x01, 0x00, 0x02, 0x00}, make([]byte, 0x100)...)...)},
		{"whole first record of two", cat(rec(append([]byte{0x01, 0x00, 0x02, 0x00}, make([]byte, 0x100)...)...), rec(make([]byte, 0x80)...))},
		{"empty records", cat(rec(), rec(), rec(0x01))},
	}
	for _, tc := range stalled {
		for range 3 {
			dialRaw(t, h, tc.sent)
		}
	}
	for i, tc := range stalled {
		t.Run("stalled/"+tc.name, func(t *testing.T) {
			if res := h.dial(clientConfig(t, versions[i%2].v, "", tlsCert(f.zoneLeaf))); res.err() != nil {
				t.Fatalf("genuine client with stalled connections open: %v", res.err())
			}
			h.nextAccepted()
		})
	}

	refused := []struct {
		name string
		sent []byte
	}{
		{"ServerHello, not a ClientHello", rec(0x02, 0x00, 0x00, 0x10)},
		{"ClientHello over 64 KiB", rec(0x01, 0x01, 0x00, 0x01)},
		{"record over 2^14 bytes", []byte{0x16, 0x03, 0x01, 0x40, 0x01}},
		{"alert inside the ClientHello", cat(rec(0x01, 0x00, 0x02, 0x00), []byte{0x15, 0x03, 0x01, 0x00, 0x02, 0x01, 0x00})},
		{"records beyond the bound", bytes.Repeat(rec(), maxPreamble/5+1)},
	}
	for _, tc := range refused {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			c := dialRaw(t, h, tc.sent)
			// The server's handshake timeout is minutes: only a refusal
			// closes the connection before this read's deadline.
			_, err := c.Read(make([]byte, 1))
			var ne net.Error
			if err == nil || errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("read on a connection that sent %s: %v, want it closed", tc.name, err)
			}
		})
	}
}
