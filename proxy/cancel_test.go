package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/aopguard/aopguard/internal/h1"
	"github.com/aopguard/aopguard/tlsconfig"
)

// countingListener counts the connections the app accepts.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// TestClientGoneCancelsUpstream: an HTTP/1.1 client that disconnects while
// its request waits on the app cancels the app's request (the app sees its
// connection closed, so its request context ends), with and without a
// request body.
func TestClientGoneCancelsUpstream(t *testing.T) {
	pki := newPKI(t)
	started := make(chan struct{}, 1)
	cancelled := make(chan time.Time, 1)
	up := newUpstream(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		started <- struct{}{}
		select {
		case <-r.Context().Done():
			cancelled <- time.Now()
		case <-time.After(guard):
		}
	})
	h := newHarness(t, pki, harnessConfig{zone: tlsconfig.PolicySpec{Mode: tlsconfig.LogOnly, CAs: cas(pki.zoneCA), Upstream: up.url}})
	for _, tt := range []struct{ name, raw string }{
		{"no body", "GET /slow HTTP/1.1\r\nHost: app.example.com\r\n\r\n"},
		{"body", "POST /slow HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 5\r\n\r\nhello"},
		{"chunked body", "POST /slow HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := h.dial(t, clientOpts{sni: "app.example.com", cert: pki.clientZone}, "http/1.1")
			if _, err := io.WriteString(c, tt.raw); err != nil {
				t.Fatal(err)
			}
			select {
			case <-started:
			case <-time.After(guard):
				t.Fatal("the request did not reach the app")
			}
			gone := time.Now()
			c.Close()
			select {
			case at := <-cancelled:
				t.Logf("the app's request was cancelled %v after the client left", at.Sub(gone))
			case <-time.After(guard):
				t.Fatal("the app's request ran to its end after the client left")
			}
			line := h.log.wait(t, "the access line", func(m map[string]any) bool {
				return m["message"] == "request" && m["path"] == "/slow" && m["status"] == float64(499)
			})
			if line["upstream_error"] == nil {
				t.Errorf("access line %v lacks the upstream error", line)
			}
			h.log.mu.Lock()
			h.log.lines = nil
			h.log.mu.Unlock()
		})
	}
}

// h2conn is a raw HTTP/2 client connection to the proxy.
type h2conn struct {
	c   *tls.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

func dialH2(t *testing.T, h *harness, o clientOpts) *h2conn {
	t.Helper()
	c := h.dial(t, o, "h2")
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("negotiated %q, want h2", p)
	}
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	x := &h2conn{c: c, fr: http2.NewFramer(c, c)}
	x.enc = hpack.NewEncoder(&x.buf)
	if err := x.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return x
}

// headers encodes a GET of path on app.example.com with extra fields.
func (x *h2conn) headers(path string, extra ...string) []byte {
	x.buf.Reset()
	for _, f := range []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "https"},
		{Name: ":authority", Value: "app.example.com"}, {Name: ":path", Value: path}} {
		x.enc.WriteField(f)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		x.enc.WriteField(hpack.HeaderField{Name: extra[i], Value: extra[i+1]})
	}
	return bytes.Clone(x.buf.Bytes())
}

// TestHTTP2RapidReset: streams reset right after their HEADERS do not
// each make the proxy dial the app (a stream reset before its upstream
// connection is made never dials), and the connection, or a new one,
// still serves.
func TestHTTP2RapidReset(t *testing.T) {
	pki := newPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	up := startUpstream(t, "app", nil, cl)
	h := newHarness(t, pki, harnessConfig{zone: tlsconfig.PolicySpec{Mode: tlsconfig.LogOnly, CAs: cas(pki.zoneCA), Upstream: up.url}})
	x := dialH2(t, h, clientOpts{sni: "app.example.com", cert: pki.clientZone})
	const streams = 400
	go func() { // read (and drop) whatever the server says, so it never blocks on us
		for {
			if _, err := x.fr.ReadFrame(); err != nil {
				return
			}
		}
	}()
	for i := range streams {
		id := uint32(2*i + 1)
		if err := x.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: x.headers("/reset"), EndStream: true, EndHeaders: true}); err != nil {
			break // the server may end a connection that abuses resets
		}
		if err := x.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
			break
		}
	}
	// A new client is still served; by then the resets were handled.
	c, _ := h.client(t, clientOpts{sni: "app.example.com", cert: pki.clientZone, h2: true})
	if res := get(t, c, "GET", "https://app.example.com/after", "", nil); res.status != 200 {
		t.Fatalf("after the resets: status %d", res.status)
	}
	dials := int(cl.n.Load())
	t.Logf("%d streams reset: %d app connections", streams, dials)
	// Only streams whose handler reached the app before the reset was
	// read cost a connection (nginx: about one in eight; here one in ten
	// to twenty on an idle machine); a transport that dialed for every
	// reset stream would blow this bound, which leaves room for a loaded
	// machine.
	if dials > streams/2 {
		t.Errorf("%d streams reset made %d app connections", streams, dials)
	}
}

// TestHTTP2LargeHeader: a header list over max_header_bytes gets 431 on
// its stream and the connection serves the next request (net/http's own
// limit tears the connection down for a single long field).
func TestHTTP2LargeHeader(t *testing.T) {
	pki := newPKI(t)
	up := newUpstream(t, "app", nil)
	h := newHarness(t, pki, harnessConfig{zone: tlsconfig.PolicySpec{Mode: tlsconfig.LogOnly, CAs: cas(pki.zoneCA), Upstream: up.url}})
	c, dials := h.client(t, clientOpts{sni: "app.example.com", cert: pki.clientZone, h2: true})
	for _, tt := range []struct {
		name   string
		hdr    http.Header
		status int
	}{
		{"one 100 KiB field", http.Header{"X-Big": {strings.Repeat("a", 100<<10)}}, 431},
		{"many fields over the limit", func() http.Header {
			hd := http.Header{}
			for i := range 40 {
				hd.Set("X-F"+strings.Repeat("x", i), strings.Repeat("b", 2<<10))
			}
			return hd
		}(), 431},
		{"within the limit", http.Header{"X-Small": {strings.Repeat("c", 32<<10)}}, 200},
	} {
		res := get(t, c, "GET", "https://app.example.com/big", "", tt.hdr)
		if res.proto != 2 || res.status != tt.status {
			t.Errorf("%s: HTTP/%d %d, want HTTP/2 %d", tt.name, res.proto, res.status, tt.status)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("client opened %d connections, want 1: the connection did not live on", n)
	}
	if up.hits() != 1 {
		t.Errorf("app received %d requests, want 1 (the one within the limit)", up.hits())
	}
	h.log.wait(t, "the access line of the 431", func(m map[string]any) bool {
		return m["message"] == "request" && m["status"] == float64(431) && m["proto"] == "HTTP/2.0"
	})
}

// TestHTTP2ContinuationFlood: a header block that never ends (HEADERS,
// then CONTINUATION frames without end) costs the attacker the connection
// after a bounded amount, not the proxy unbounded reading and decoding.
func TestHTTP2ContinuationFlood(t *testing.T) {
	pki := newPKI(t)
	up := newUpstream(t, "app", nil)
	h := newHarness(t, pki, harnessConfig{zone: tlsconfig.PolicySpec{Mode: tlsconfig.LogOnly, CAs: cas(pki.zoneCA), Upstream: up.url}})
	x := dialH2(t, h, clientOpts{sni: "app.example.com", cert: pki.clientZone})
	ended := make(chan error, 1)
	go func() {
		for {
			f, err := x.fr.ReadFrame()
			if err != nil {
				ended <- err
				return
			}
			if _, ok := f.(*http2.GoAwayFrame); ok {
				ended <- nil
				return
			}
		}
	}()
	const limit = 256 << 20 // far beyond any bound the server should keep
	frag := x.headers("/flood")
	if err := x.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: frag, EndStream: true}); err != nil {
		t.Fatal(err)
	}
	field := x.headers("/flood", "x-flood", strings.Repeat("f", 8<<10))
	sent := 0
	for sent < limit {
		if err := x.fr.WriteContinuation(1, false, field); err != nil {
			break
		}
		sent += len(field)
		select {
		case err := <-ended:
			ended <- err
			sent = limit + 1 // stop
		default:
		}
	}
	select {
	case <-ended:
	case <-time.After(guard):
		t.Fatal("the server kept the connection through the flood")
	}
	if up.hits() != 0 {
		t.Errorf("the flooded request reached the app")
	}
}

// TestHTTP2Connect: CONNECT over HTTP/2 is refused (400) on its stream,
// as over HTTP/1.1, and never reaches the app.
func TestHTTP2Connect(t *testing.T) {
	pki := newPKI(t)
	up := newUpstream(t, "app", nil)
	h := newHarness(t, pki, harnessConfig{zone: tlsconfig.PolicySpec{Mode: tlsconfig.LogOnly, CAs: cas(pki.zoneCA), Upstream: up.url}})
	x := dialH2(t, h, clientOpts{sni: "app.example.com", cert: pki.clientZone})
	x.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	x.buf.Reset()
	x.enc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
	x.enc.WriteField(hpack.HeaderField{Name: ":authority", Value: "app.example.com:443"})
	if err := x.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: x.buf.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := x.fr.ReadFrame()
		if err != nil {
			t.Fatalf("no answer to CONNECT: %v", err)
		}
		if mh, ok := f.(*http2.MetaHeadersFrame); ok && mh.StreamID == 1 {
			if s := mh.PseudoValue("status"); s != "400" {
				t.Errorf("CONNECT answered %s, want 400", s)
			}
			break
		}
	}
	if up.hits() != 0 {
		t.Errorf("CONNECT reached the app")
	}
}

// TestWatchKeepsNextRequest: a byte the client watch reads while the app
// works (the client's next request, sent before the answer) is not lost:
// the next request is served whole.
func TestWatchKeepsNextRequest(t *testing.T) {
	pki := newPKI(t)
	started := make(chan struct{}, 1)
	gate := make(chan struct{})
	up := newUpstream(t, "app", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-gate
		}
		io.WriteString(w, "answer "+r.Method+" "+r.URL.Path)
	})
	h := newHarness(t, pki, harnessConfig{zone: tlsconfig.PolicySpec{Mode: tlsconfig.LogOnly, CAs: cas(pki.zoneCA), Upstream: up.url}})
	c := h.dial(t, clientOpts{sni: "app.example.com", cert: pki.clientZone}, "http/1.1")
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
	<-started
	time.Sleep(3 * h1.WatchDelay) // the watch is reading by now
	io.WriteString(c, "GET /next HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
	close(gate)
	for _, want := range []string{"answer GET /slow", "answer GET /next"} {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("waiting for %q: %v", want, err)
		}
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || string(b) != want {
			t.Errorf("got %d %q, want 200 %q", res.StatusCode, b, want)
		}
	}
}
