package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aopguard/aopguard/tlsconfig"
)

// wireEnv: the zone (log-only) forwards to an upstream with handlers that
// exercise HTTP/1.1 framing from both sides.
type wireEnv struct {
	pki  *testPKI
	h    *harness
	up   *upstream
	gate chan struct{} // /slow answers once it is closed
}

func newWireEnv(t *testing.T, cfg harnessConfig) *wireEnv {
	t.Helper()
	e := &wireEnv{pki: newPKI(t), gate: make(chan struct{})}
	e.up = newUpstream(t, "wire", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			w.Header().Set("X-Got-Content-Length", r.Header.Get("Content-Length"))
			w.Header().Set("X-Got-TE", strings.Join(r.TransferEncoding, ","))
			w.Header().Set("X-Got-Expect", r.Header.Get("Expect"))
			w.Header().Set("X-Got-Upgrade", r.Header.Get("Upgrade"))
			w.Write(body)
		case "/trailer":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "abc")
			w.(http.Flusher).Flush()
			w.Header().Set("X-Sum", "42")
		case "/hints":
			w.Header().Set("Link", "</app.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			io.WriteString(w, "after hints")
		case "/short", "/cut":
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			if r.URL.Path == "/short" {
				brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
			} else {
				brw.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
			}
			brw.Flush()
			conn.Close()
		case "/ws":
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
			if brw.Flush() == nil {
				io.Copy(conn, brw) // echo until the proxy closes
			}
		case "/slow":
			<-e.gate
			io.WriteString(w, "done")
		case "/early":
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
		default:
			io.WriteString(w, "ok")
		}
	})
	cfg.zone = tlsconfig.PolicySpec{Mode: tlsconfig.LogOnly, CAs: cas(e.pki.zoneCA), Upstream: e.up.url}
	e.h = newHarness(t, e.pki, cfg)
	return e
}

func (e *wireEnv) dial(t *testing.T) (*tls.Conn, *bufio.Reader) {
	c := e.h.dial(t, clientOpts{sni: "app.example.com", cert: e.pki.clientZone}, "http/1.1")
	return c, bufio.NewReader(c)
}

const okGet = "GET /ok HTTP/1.1\r\nHost: app.example.com\r\n\r\n"

// TestWireHTTP1 sends hand-made requests on one connection and checks the
// responses, in order, and whether the connection stays usable after.
func TestWireHTTP1(t *testing.T) {
	e := newWireEnv(t, harnessConfig{})
	tests := []struct {
		name   string
		raw    string
		want   []int
		closed bool // the proxy closes the connection after the responses
		check  func(t *testing.T, res []*http.Response, bodies []string)
	}{
		{name: "pipelined requests are answered in order",
			raw:  "GET /echo HTTP/1.1\r\nHost: app.example.com\r\n\r\n" + okGet,
			want: []int{200, 200},
			check: func(t *testing.T, _ []*http.Response, bodies []string) {
				if bodies[0] != "" || bodies[1] != "ok" {
					t.Errorf("bodies %q, want [\"\" \"ok\"]", bodies)
				}
			}},
		{name: "HTTP/1.1 without Host", raw: "GET / HTTP/1.1\r\n\r\n", want: []int{400}, closed: true},
		{name: "malformed Host", raw: "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", want: []int{400}, closed: true},
		{name: "HTTP/2 request line", raw: "GET / HTTP/2.0\r\nHost: app.example.com\r\n\r\n", want: []int{505}, closed: true},
		{name: "garbage request line", raw: "HELLO\r\n\r\n", want: []int{400}, closed: true},
		{name: "space in a header name", raw: "GET / HTTP/1.1\r\nHost: app.example.com\r\nBad Name: v\r\n\r\n", want: []int{400}, closed: true},
		{name: "control byte in a header value", raw: "GET / HTTP/1.1\r\nHost: app.example.com\r\nX-A: a\x01b\r\n\r\n", want: []int{400}, closed: true},
		{name: "unknown expectation", raw: "GET / HTTP/1.1\r\nHost: app.example.com\r\nExpect: tea\r\n\r\n", want: []int{417}, closed: true},
		{name: "HTTP/1.0 closes", raw: "GET /ok HTTP/1.0\r\nHost: app.example.com\r\n\r\n", want: []int{200}, closed: true,
			check: func(t *testing.T, res []*http.Response, _ []string) {
				if !res[0].Close {
					t.Errorf("response header %v lacks Connection: close", res[0].Header)
				}
			}},
		{name: "HTTP/1.0 keep-alive with a known length stays open",
			raw:  "GET /ok HTTP/1.0\r\nHost: app.example.com\r\nConnection: keep-alive\r\n\r\n",
			want: []int{200},
			check: func(t *testing.T, res []*http.Response, _ []string) {
				if got := res[0].Header.Get("Connection"); got != "keep-alive" {
					t.Errorf("Connection %q, want keep-alive", got)
				}
			}},
		{name: "Connection: close is honoured", raw: "GET /ok HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n", want: []int{200}, closed: true},
		{name: "Content-Length body reaches the app",
			raw:  "POST /echo HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 5\r\n\r\nhello",
			want: []int{200},
			check: func(t *testing.T, res []*http.Response, bodies []string) {
				if bodies[0] != "hello" || res[0].Header.Get("X-Got-Content-Length") != "5" || res[0].Header.Get("X-Got-TE") != "" {
					t.Errorf("app saw body %q, Content-Length %q, TE %q; want hello, 5, none",
						bodies[0], res[0].Header.Get("X-Got-Content-Length"), res[0].Header.Get("X-Got-TE"))
				}
			}},
		{name: "chunked body reaches the app chunked",
			raw:  "POST /echo HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n",
			want: []int{200},
			check: func(t *testing.T, res []*http.Response, bodies []string) {
				if bodies[0] != "hello world" || res[0].Header.Get("X-Got-TE") != "chunked" {
					t.Errorf("app saw body %q, TE %q; want \"hello world\", chunked", bodies[0], res[0].Header.Get("X-Got-TE"))
				}
			}},
		// RFC 9112 6.3: the smuggling shape; the server MUST close (nginx: 400).
		{name: "Content-Length beside chunked is refused",
			raw:    "POST /echo HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
			want:   []int{400},
			closed: true},
		{name: "a malformed Host closes the connection, its body unread",
			raw:    "POST /x HTTP/1.1\r\nHost: a:b:c\r\nContent-Length: 5\r\n\r\nhello",
			want:   []int{400},
			closed: true},
		{name: "an upgrade to h2c is not passed on",
			raw:  "GET /echo HTTP/1.1\r\nHost: app.example.com\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
			want: []int{200},
			check: func(t *testing.T, res []*http.Response, _ []string) {
				if got := res[0].Header.Get("X-Got-Upgrade"); got != "" {
					t.Errorf("app saw Upgrade %q; only websocket may pass", got)
				}
			}},
		{name: "informational response is passed on",
			raw:  "GET /hints HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
			want: []int{103, 200},
			check: func(t *testing.T, res []*http.Response, bodies []string) {
				if res[0].Header.Get("Link") == "" || bodies[1] != "after hints" {
					t.Errorf("103 headers %v, final body %q", res[0].Header, bodies[1])
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, br := e.dial(t)
			if _, err := io.WriteString(c, tt.raw); err != nil {
				t.Fatal(err)
			}
			var res []*http.Response
			var bodies []string
			for i, want := range tt.want {
				r, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("response %d: %v", i, err)
				}
				b, err := io.ReadAll(r.Body)
				if err != nil {
					t.Fatalf("response %d body: %v", i, err)
				}
				if r.StatusCode != want {
					t.Fatalf("response %d: status %d (%q), want %d", i, r.StatusCode, b, want)
				}
				res, bodies = append(res, r), append(bodies, string(b))
			}
			if tt.check != nil {
				tt.check(t, res, bodies)
			}
			if tt.closed {
				if b, err := br.ReadByte(); err != io.EOF {
					t.Errorf("connection still open after the response (read %q, %v)", b, err)
				}
				return
			}
			if r := rawRoundTrip(t, c, br, okGet); r.status != 200 || r.body != "ok" {
				t.Errorf("next request on the connection: %d %q", r.status, r.body)
			}
		})
	}
}

// TestWireLargeUnreadBody: a refused request whose body is too large to
// drain costs the client its connection, not the proxy its memory.
func TestWireLargeUnreadBody(t *testing.T) {
	e := newWireEnv(t, harnessConfig{})
	c, br := e.dial(t)
	const size = 4 << 20
	go func() {
		io.WriteString(c, "POST /x HTTP/1.1\r\nHost: a:b:c\r\nContent-Length: "+strconv.Itoa(size)+"\r\n\r\n")
		c.Write(make([]byte, size)) // fails once the proxy closes: expected
	}()
	r, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, r.Body)
	if r.StatusCode != http.StatusBadRequest || !r.Close {
		t.Fatalf("status %d, close=%v; want 400 announcing Connection: close", r.StatusCode, r.Close)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Error("connection still open after a refused 4 MiB body")
	}
}

// TestWireExpectContinue: the client is told to go on only when the body
// is wanted, and the app gets a plain request with the body.
func TestWireExpectContinue(t *testing.T) {
	e := newWireEnv(t, harnessConfig{})
	c, br := e.dial(t)
	io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	r, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.StatusCode != http.StatusContinue {
		t.Fatalf("status %d before the body was sent, want 100", r.StatusCode)
	}
	io.WriteString(c, "hello")
	r, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	if r.StatusCode != 200 || string(b) != "hello" || r.Header.Get("X-Got-Expect") != "" {
		t.Errorf("got %d %q, app saw Expect %q; want 200 hello and no Expect", r.StatusCode, b, r.Header.Get("X-Got-Expect"))
	}

	// Refused before the body is read: no 100, and the connection ends
	// (the client may still send the body it announced).
	c, br = e.dial(t)
	io.WriteString(c, "POST /x HTTP/1.1\r\nHost: a:b:c\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	r, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, r.Body)
	if r.StatusCode != http.StatusBadRequest {
		t.Errorf("status %d, want 400 without a 100 first", r.StatusCode)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("connection still open after refusing an expected body: %v", err)
	}
}

// TestWireTruncatedUpstream: an app that dies mid-body must never look
// like a complete response to the client, with either framing, over
// either protocol.
func TestWireTruncatedUpstream(t *testing.T) {
	e := newWireEnv(t, harnessConfig{})
	for _, h2 := range []bool{false, true} {
		for _, path := range []string{"/short", "/cut"} {
			t.Run(fmt.Sprintf("h2=%v%s", h2, path), func(t *testing.T) {
				c, _ := e.h.client(t, clientOpts{sni: "app.example.com", cert: e.pki.clientZone, h2: h2})
				res, err := c.Get("https://app.example.com" + path)
				if err != nil {
					return // refused outright: also not a whole response
				}
				defer res.Body.Close()
				b, err := io.ReadAll(res.Body)
				if err == nil {
					t.Errorf("read %q and a clean end; want an error for a truncated body", b)
				}
				line := e.h.log.wait(t, "for "+path, func(m map[string]any) bool {
					return m["message"] == "request" && m["path"] == path && m["proto"] == map[bool]string{false: "HTTP/1.1", true: "HTTP/2.0"}[h2]
				})
				if line["aborted"] != true {
					t.Errorf("access line %v lacks aborted=true", line)
				}
			})
		}
	}
}

// TestWireTrailers: an app's trailer reaches the client.
func TestWireTrailers(t *testing.T) {
	e := newWireEnv(t, harnessConfig{})
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			c, _ := e.h.client(t, clientOpts{sni: "app.example.com", cert: e.pki.clientZone, h2: h2})
			res, err := c.Get("https://app.example.com/trailer")
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil || string(b) != "abc" || res.Trailer.Get("X-Sum") != "42" {
				t.Errorf("body %q (%v), trailer %v; want abc and X-Sum: 42", b, err, res.Trailer)
			}
		})
	}
}

// TestWireEarlyAnswer: an app that answers before reading a large body
// (413) gets its answer to the client, not a 502.
func TestWireEarlyAnswer(t *testing.T) {
	e := newWireEnv(t, harnessConfig{})
	c, _ := e.h.client(t, clientOpts{sni: "app.example.com", cert: e.pki.clientZone})
	res, err := c.Post("https://app.example.com/early", "application/octet-stream", strings.NewReader(strings.Repeat("x", 8<<20)))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("status %d, want the app's 413", res.StatusCode)
	}
}

// TestShutdownDrains: Shutdown closes idle connections at once, lets a
// request in flight finish (telling its client the connection ends), and
// accepts nothing new.
func TestShutdownDrains(t *testing.T) {
	e := newWireEnv(t, harnessConfig{})
	idle, idleBr := e.dial(t)
	if r := rawRoundTrip(t, idle, idleBr, okGet); r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	busy, busyBr := e.dial(t)
	io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
	waitFor(t, "the slow request to reach the app", func() bool { return len(e.up.got("/slow")) == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.h.srv.Shutdown(ctx) }()

	if _, err := idleBr.ReadByte(); err == nil {
		t.Error("idle connection still open during shutdown")
	}
	waitFor(t, "the listener to close", func() bool {
		c, err := net.DialTimeout("tcp", e.h.addr, guard)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	default:
	}
	close(e.gate)
	r, err := http.ReadResponse(busyBr, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	if r.StatusCode != 200 || string(b) != "done" || !r.Close {
		t.Errorf("in-flight request: %d %q close=%v; want 200 done close=true", r.StatusCode, b, r.Close)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestWireTimeouts: a connection that idles past IdleTimeout, or sends
// only part of a request head within ReadHeaderTimeout, is closed.
func TestWireTimeouts(t *testing.T) {
	e := newWireEnv(t, harnessConfig{idleTimeout: 100 * time.Millisecond, readHeaderTimeout: 100 * time.Millisecond})
	c, br := e.dial(t)
	if r := rawRoundTrip(t, c, br, okGet); r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("idle connection: read %v, want EOF once idle_timeout passed", err)
	}
	c, br = e.dial(t)
	io.WriteString(c, "GET /ok HTTP/1.1\r\nHost: app.exa")
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("half a request head: read %v, want EOF once read_header_timeout passed", err)
	}
}

// TestWire1xxHTTP2 checks the same 103 over HTTP/2 (net/http's server).
func TestWire1xxHTTP2(t *testing.T) {
	e := newWireEnv(t, harnessConfig{})
	c, _ := e.h.client(t, clientOpts{sni: "app.example.com", cert: e.pki.clientZone, h2: true})
	var got []int
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
		got = append(got, code)
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "https://app.example.com/hints", nil)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if len(got) != 1 || got[0] != http.StatusEarlyHints || res.StatusCode != 200 {
		t.Errorf("1xx %v, final %d; want [103] then 200", got, res.StatusCode)
	}
}

// TestWireUpgradeKeepsEarlyBytes: bytes the client sends right behind an
// upgrade request reach the app through the tunnel.
func TestWireUpgradeKeepsEarlyBytes(t *testing.T) {
	e := newStreamEnv(t)
	c := e.h.dial(t, clientOpts{sni: "app.example.com", cert: e.pki.clientZone}, "http/1.1")
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: app.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nearly bytes")
	br := bufio.NewReader(c)
	if res, err := http.ReadResponse(br, nil); err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("response %v (%v), want 101", res, err)
	}
	got := make([]byte, len("early bytes"))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "early bytes" {
		t.Errorf("echoed %q (%v), want the bytes sent with the request", got, err)
	}
}

// TestWireUpgradeOutlivesIdleTimeout: a WebSocket tunnel is not bound by
// the deadlines of the HTTP exchange that opened it.
func TestWireUpgradeOutlivesIdleTimeout(t *testing.T) {
	e := newWireEnv(t, harnessConfig{idleTimeout: 150 * time.Millisecond})
	c, br := e.dial(t)
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: app.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	if res, err := http.ReadResponse(br, nil); err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("response %v (%v), want 101", res, err)
	}
	got := make([]byte, 3)
	for _, msg := range []string{"one", "two"} {
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
			t.Fatalf("echo of %q: %q, %v", msg, got, err)
		}
		time.Sleep(400 * time.Millisecond) // well past idle_timeout: the tunnel must not care
	}
}

// TestWireAbortHTTP10: a body that ends with the connection (HTTP/1.0)
// and is cut off by the app must not end with a clean TLS close: no
// close_notify after it, while a whole one gets one. (Go's TLS client, and
// curl as Debian builds it, accept a bare close as the end, so the test
// reads the TLS records themselves.)
func TestWireAbortHTTP10(t *testing.T) {
	e := newWireEnv(t, harnessConfig{})
	for _, tt := range []struct {
		path        string
		closeNotify bool
	}{{"/ok", true}, {"/cut", false}} {
		raw, err := net.DialTimeout("tcp", e.h.addr, guard)
		if err != nil {
			t.Fatal(err)
		}
		rec := &recordingConn{Conn: raw}
		cfg := e.h.tlsConfig(clientOpts{sni: "app.example.com", cert: e.pki.clientZone}, "http/1.1")
		cfg.MinVersion = tls.VersionTLS13
		c := tls.Client(rec, cfg)
		c.SetDeadline(time.Now().Add(guard))
		io.WriteString(c, "GET "+tt.path+" HTTP/1.0\r\nHost: app.example.com\r\n\r\n")
		io.ReadAll(c) // to the end, clean or not
		c.Close()
		if got := endsWithCloseNotify(rec.in.Bytes()); got != tt.closeNotify {
			t.Errorf("HTTP/1.0 %s: close_notify at the end = %v, want %v", tt.path, got, tt.closeNotify)
		}
	}
}

// recordingConn keeps every byte it reads.
type recordingConn struct {
	net.Conn
	in bytes.Buffer
}

func (r *recordingConn) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.in.Write(p[:n])
	return n, err
}

// endsWithCloseNotify reports whether the last TLS 1.3 record of a server's
// stream has the size of an encrypted two-byte alert under AES-128-GCM
// (2 + 1 content type + 16 tag): the close_notify.
func endsWithCloseNotify(stream []byte) bool {
	last := -1
	for len(stream) >= 5 {
		n := int(stream[3])<<8 | int(stream[4])
		if len(stream) < 5+n {
			return false
		}
		last = n
		stream = stream[5+n:]
	}
	return last == 19
}

// TestWireKeepAliveAfterIdle: a TLS keep-alive connection that idles past
// the engine's idle hand-off (100 ms, internal/h1) serves its next request
// on the same connection: crypto/tls takes the read timeout that ends the
// first wait as a pause, not a failure.
func TestWireKeepAliveAfterIdle(t *testing.T) {
	e := newWireEnv(t, harnessConfig{})
	c, dials := e.h.client(t, clientOpts{sni: "app.example.com", cert: e.pki.clientZone})
	for i := range 3 {
		if i > 0 {
			time.Sleep(300 * time.Millisecond) // idle past the hand-off; not a timing assertion
		}
		res, err := c.Get("https://app.example.com/idle")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("request %d: status %d", i, res.StatusCode)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d connections for 3 requests, want 1 kept alive across the idle waits", n)
	}
}
