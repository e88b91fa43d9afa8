package proxy

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aopguard/aopguard/internal/testpki"
	"github.com/aopguard/aopguard/internal/testtool"
	"github.com/aopguard/aopguard/tlsconfig"
)

// rawApp is an upstream that records the raw bytes it receives and the
// requests it could frame whole from them, and answers each with a fixed
// raw response.
type rawApp struct {
	ln net.Listener

	mu     sync.Mutex
	answer string
	raw    []byte
	reqs   []*http.Request // whole requests (body read to its end) in arrival order
	bodies []string
	conns  int
	ended  int // connections that ended (closed by the peer)
}

const okAnswer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

func newRawApp(t *testing.T) *rawApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &rawApp{ln: ln, answer: okAnswer}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.mu.Lock()
			a.conns++
			a.mu.Unlock()
			go a.serve(c)
		}
	}()
	return a
}

// rawTee tees what a connection reads into the app's record.
type rawTee struct {
	a *rawApp
	c net.Conn
}

func (r rawTee) Read(p []byte) (int, error) {
	n, err := r.c.Read(p)
	r.a.mu.Lock()
	r.a.raw = append(r.a.raw, p[:n]...)
	r.a.mu.Unlock()
	return n, err
}

func (a *rawApp) serve(c net.Conn) {
	defer func() {
		c.Close()
		a.mu.Lock()
		a.ended++
		a.mu.Unlock()
	}()
	c.SetDeadline(time.Now().Add(guard))
	br := bufio.NewReader(rawTee{a, c})
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return // cut off: not a whole request
		}
		a.mu.Lock()
		a.reqs = append(a.reqs, req)
		a.bodies = append(a.bodies, string(body))
		answer := a.answer
		a.mu.Unlock()
		if _, err := io.WriteString(c, answer); err != nil || req.Close || strings.Contains(answer, "Connection: close") {
			return
		}
	}
}

// reset forgets what was received and sets the answer for what follows.
func (a *rawApp) reset(answer string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.raw, a.reqs, a.bodies = nil, nil, nil
	a.answer = cmpOr(answer, okAnswer)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// received returns a summary of each whole request ("METHOD target
// body"), the raw bytes and the requests.
func (a *rawApp) received() ([]string, []byte, []*http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for i, r := range a.reqs {
		out = append(out, strings.TrimSpace(r.Method+" "+r.RequestURI+" "+a.bodies[i]))
	}
	return out, append([]byte(nil), a.raw...), append([]*http.Request(nil), a.reqs...)
}

func (a *rawApp) endedCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ended
}

// wireCase is one exchange: what a client sends on a fresh connection
// (app.example.com, the zone's certificate), what it must be answered and
// what the app must receive.
type wireCase struct {
	name string
	raw  string
	// answer is the app's raw response ("" for a plain 200 "ok").
	answer string
	// status is every answer the client must get, in order.
	status []int
	// app is what the app must receive whole, one "METHOD target body"
	// per request; nil: nothing at all, not a byte.
	app []string
	// check looks further at the requests the app received.
	check func(t *testing.T, reqs []*http.Request)
}

// lookalikes are client headers that differ from those aopguard (or
// ReverseProxy for it) sets only by case or '_'.
const lookalikes = "X_Forwarded_For: 6.6.6.6\r\nX-Forwarded_Proto: http\r\nX_Forwarded_Host: evil.example\r\n" +
	"x_real_ip: 6.6.6.6\r\nX_Client_Verify: SUCCESS\r\nX_Client_Cert_Fingerprint: 00\r\nforwarded: for=6.6.6.6\r\n"

const host = "Host: app.example.com\r\n"

// wireCases: every finding of issue 11 and the categories nginx refuses:
// framing, request-targets, Host forms, header names, and what the app
// answers.
var wireCases = []wireCase{
	{name: "plain GET", raw: "GET /a HTTP/1.1\r\n" + host + "\r\n", status: []int{200}, app: []string{"GET /a"}},
	{name: "pipelined", raw: "GET /a HTTP/1.1\r\n" + host + "\r\nGET /b HTTP/1.1\r\n" + host + "Connection: close\r\n\r\n",
		status: []int{200, 200}, app: []string{"GET /a", "GET /b"}},
	{name: "bare LF line ends", raw: "GET /lf HTTP/1.1\n" + host[:len(host)-2] + "\n\n", status: []int{200}, app: []string{"GET /lf"}},
	{name: "chunked body", raw: "POST /c HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		status: []int{200}, app: []string{"POST /c hello"}},

	// Request-targets.
	{name: "relative target", raw: "GET foo HTTP/1.1\r\n" + host + "\r\n", status: []int{400}},
	{name: "bad escape in target", raw: "GET /%zz HTTP/1.1\r\n" + host + "\r\n", status: []int{400}},
	{name: "control byte in target", raw: "GET /a\x01b HTTP/1.1\r\n" + host + "\r\n", status: []int{400}},
	{name: "asterisk-form GET", raw: "GET * HTTP/1.1\r\n" + host + "\r\n", status: []int{400}},
	{name: "OPTIONS asterisk answered here", raw: "OPTIONS * HTTP/1.1\r\n" + host + "Connection: close\r\n\r\n", status: []int{200}},
	{name: "CONNECT", raw: "CONNECT app.example.com:443 HTTP/1.1\r\nHost: app.example.com:443\r\n\r\n", status: []int{400}},
	{name: "absolute-form other scheme", raw: "GET ftp://app.example.com/x HTTP/1.1\r\n" + host + "\r\n", status: []int{400}},
	{name: "absolute-form userinfo", raw: "GET http://u:p@app.example.com/x HTTP/1.1\r\n" + host + "\r\n", status: []int{400}},
	{name: "absolute-form without host", raw: "GET http:///x HTTP/1.1\r\n" + host + "\r\n", status: []int{400}},
	{name: "absolute-form same host", raw: "GET http://app.example.com/abs HTTP/1.1\r\n" + host + "\r\n",
		status: []int{200}, app: []string{"GET /abs"},
		check: func(t *testing.T, reqs []*http.Request) {
			if reqs[0].Host != "app.example.com" {
				t.Errorf("app saw Host %q", reqs[0].Host)
			}
		}},
	// RFC 9112 3.2.2: the target's host is the request's, whatever the
	// Host field says; secure.example.com requires a certificate the
	// zone's edge does not have.
	{name: "absolute-form judged under the host it names", raw: "GET http://secure.example.com/abs HTTP/1.1\r\n" + host + "\r\n",
		status: []int{421}},
	{name: "lower-case method", raw: "get /a HTTP/1.1\r\n" + host + "\r\n", status: []int{400}},
	{name: "HTTP/2.0 request line", raw: "GET /a HTTP/2.0\r\n" + host + "\r\n", status: []int{505}},

	// Host forms.
	{name: "Host with two trailing dots", raw: "GET /a HTTP/1.1\r\nHost: other.example.com..\r\n\r\n", status: []int{400}},
	{name: "Host with empty label", raw: "GET /a HTTP/1.1\r\nHost: app..example.com\r\n\r\n", status: []int{400}},
	{name: "two Host fields", raw: "GET /a HTTP/1.1\r\n" + host + host + "\r\n", status: []int{400}},
	{name: "HTTP/1.1 without Host", raw: "GET /a HTTP/1.1\r\n\r\n", status: []int{400}},

	// Framing.
	{name: "Content-Length with Transfer-Encoding", raw: "POST /s HTTP/1.1\r\n" + host + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n" + host + "\r\n",
		status: []int{400}},
	{name: "Transfer-Encoding in HTTP/1.0", raw: "POST /s HTTP/1.0\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", status: []int{400}},
	{name: "unknown transfer coding", raw: "POST /s HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", status: []int{501}},
	{name: "two Content-Length fields", raw: "POST /s HTTP/1.1\r\n" + host + "Content-Length: 1\r\nContent-Length: 1\r\n\r\nx", status: []int{400}},
	{name: "signed Content-Length", raw: "POST /s HTTP/1.1\r\n" + host + "Content-Length: +1\r\n\r\nx", status: []int{400}},
	{name: "folded header line", raw: "GET /a HTTP/1.1\r\n" + host + "X-A: a\r\n b\r\n\r\n", status: []int{400}},
	{name: "space before colon", raw: "GET /a HTTP/1.1\r\n" + host + "Content-Length : 5\r\n\r\nhello", status: []int{400}},
	{name: "NUL in a value", raw: "GET /a HTTP/1.1\r\n" + host + "X-A: a\x00b\r\n\r\n", status: []int{400}},

	// Header names: look-alikes of ours are dropped, the request served.
	{name: "look-alikes of our headers", raw: "GET /h HTTP/1.1\r\n" + host + lookalikes + "\r\n", status: []int{200}, app: []string{"GET /h"},
		check: func(t *testing.T, reqs []*http.Request) {
			for k, v := range reqs[0].Header {
				for _, ours := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Real-Ip", "Forwarded", "X-Client-Verify", "X-Client-Cert-Fingerprint"} {
					if foldEqual(k, ours) && k != ours {
						t.Errorf("app received the look-alike %s: %q", k, v)
					}
				}
				if strings.Contains(strings.Join(v, ","), "6.6.6.6") || strings.Contains(strings.Join(v, ","), "evil") {
					t.Errorf("app received the client's %s: %q", k, v)
				}
			}
		}},

	// What the app answers.
	{name: "app: space before colon", raw: "GET /r HTTP/1.1\r\n" + host + "\r\n",
		answer: "HTTP/1.1 200 OK\r\nContent-Length : 60\r\nContent-Length: 2\r\n\r\nok", status: []int{502}, app: []string{"GET /r"}},
	{name: "app: Transfer-Encoding with space", raw: "GET /r HTTP/1.1\r\n" + host + "\r\n",
		answer: "HTTP/1.1 200 OK\r\nTransfer-Encoding : chunked\r\nContent-Length: 2\r\n\r\nok", status: []int{502}, app: []string{"GET /r"}},
	{name: "app: Content-Length with Transfer-Encoding", raw: "GET /r HTTP/1.1\r\n" + host + "\r\n",
		answer: "HTTP/1.1 200 OK\r\nContent-Length: 20\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", status: []int{502}, app: []string{"GET /r"}},
	{name: "app: two Content-Length fields", raw: "GET /r HTTP/1.1\r\n" + host + "\r\n",
		answer: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", status: []int{502}, app: []string{"GET /r"}},
	{name: "app: Transfer-Encoding in HTTP/1.0", raw: "GET /r HTTP/1.1\r\n" + host + "\r\n",
		answer: "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", status: []int{502}, app: []string{"GET /r"}},
	{name: "app: folded line", raw: "GET /r HTTP/1.1\r\n" + host + "\r\n",
		answer: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: a\r\n b\r\n\r\nok", status: []int{502}, app: []string{"GET /r"}},
}

// wireResult is what one case did on one server.
type wireResult struct {
	status []int // answers, in order, until the connection closed
	app    []string
	raw    []byte
	reqs   []*http.Request
	closed bool
}

// runWire sends c.raw on conn and reads answers until the connection
// closes or want answers came and the next read would wait.
func runWire(t *testing.T, conn net.Conn, app *rawApp, c wireCase) wireResult {
	t.Helper()
	app.reset(c.answer)
	if _, err := io.WriteString(conn, c.raw); err != nil {
		t.Fatal(err)
	}
	var r wireResult
	br := bufio.NewReader(conn)
	refused := map[int]bool{400: true, 431: true, 501: true, 505: true}[c.status[len(c.status)-1]]
	for {
		if len(r.status) >= len(c.status) && !refused {
			break // the connection may stay open: not waited for
		}
		if len(r.status) >= len(c.status) {
			// Enough answers: is the connection closed? A short wait
			// only decides between closed and open, never the verdict.
			conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		}
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			r.closed = !isTimeout(err)
			break
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		r.status = append(r.status, res.StatusCode)
	}
	conn.Close()
	r.app, r.raw, r.reqs = app.received()
	return r
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestWireTable runs every wire case against aopguard, with an app that
// records the raw bytes it receives, and checks the client's answers and
// exactly what the app received. Where nginx is installed the same cases
// run against nginx set up like Cloudflare's example; a case aopguard
// forwards while nginx refuses it fails.
func TestWireTable(t *testing.T) {
	pki := newPKI(t)
	app := newRawApp(t)
	appURL := "http://" + app.ln.Addr().String()
	h := newHarness(t, pki, harnessConfig{
		zone:  tlsconfig.PolicySpec{Mode: tlsconfig.LogOnly, CAs: cas(pki.zoneCA), Upstream: appURL},
		hosts: []tlsconfig.PolicySpec{{Name: "secure.example.com", Mode: tlsconfig.Require, CAs: cas(pki.caA), Upstream: appURL}},
	})
	ours := map[string]wireResult{}
	for _, c := range wireCases {
		t.Run(c.name, func(t *testing.T) {
			ended := app.endedCount()
			conn := h.dial(t, clientOpts{sni: "app.example.com", cert: pki.clientZone}, "http/1.1")
			r := runWire(t, conn, app, c)
			ours[c.name] = r
			if fmt.Sprint(r.status) != fmt.Sprint(c.status) {
				t.Errorf("answers %v, want %v", r.status, c.status)
			}
			if fmt.Sprint(r.app) != fmt.Sprint(c.app) {
				t.Errorf("app received %q, want %q (raw %q)", r.app, c.app, r.raw)
			}
			if c.app == nil && len(r.raw) > 0 {
				t.Errorf("app received bytes of a refused request: %q", r.raw)
			}
			if c.check != nil && len(r.reqs) > 0 {
				c.check(t, r.reqs)
			}
			if s := c.status[len(c.status)-1]; (s == 400 || s == 431 || s == 501 || s == 505) && !r.closed {
				// Refused requests close the connection, as nginx does;
				// 421 and 502 answer one request among others.
				t.Errorf("connection open after a %d", s)
			}
			if c.answer != "" {
				// The app's connection is closed, never reused, after
				// its answer was refused.
				waitFor(t, "the proxy to close the app's connection", func() bool { return app.endedCount() > ended })
			}
			if c.status[0] >= 400 && c.status[0] != 421 && c.status[0] != 502 {
				// Refused by the engine: still one access line.
				if len(h.log.find(func(m map[string]any) bool {
					return m["message"] == "request" && m["reason"] == "refused_request" && m["status"] == float64(c.status[0])
				})) == 0 {
					t.Errorf("no access line for the refused request")
				}
			}
		})
	}

	t.Run("nginx", func(t *testing.T) {
		napp := newRawApp(t)
		addr := startWireNginx(t, pki, napp.ln.Addr().String())
		cfg := &tls.Config{ServerName: "app.example.com", RootCAs: testpki.Pool(pki.serverCA), NextProtos: []string{"http/1.1"},
			Certificates: []tls.Certificate{pki.clientZone.TLS()}}
		for _, c := range wireCases {
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: guard}, "tcp", addr, cfg)
			if err != nil {
				t.Fatal(err)
			}
			conn.SetDeadline(time.Now().Add(guard))
			theirs := runWire(t, conn, napp, c)
			mine := ours[c.name]
			t.Logf("%-45s aopguard %v %d forwarded; nginx %v %d forwarded", c.name, mine.status, len(mine.app), theirs.status, len(theirs.app))
			if len(mine.app) > len(theirs.app) {
				t.Errorf("%s: aopguard forwarded %q, nginx refused (%v, forwarded %q)", c.name, mine.app, theirs.status, theirs.app)
			}
			if c.answer != "" && len(theirs.status) > 0 && theirs.status[0] >= 500 && (len(mine.status) == 0 || mine.status[0] < 500) {
				t.Errorf("%s: aopguard passed on an answer nginx refused (%v)", c.name, theirs.status)
			}
		}
	})
}

// startWireNginx runs nginx in front of app, set up like Cloudflare's
// example (ssl_client_certificate + ssl_verify_client) with a plain
// proxy_pass, and returns its address.
func startWireNginx(t *testing.T, p *testPKI, app string) string {
	t.Helper()
	dir := t.TempDir()
	return testtool.StartNginx(t, testtool.NginxSite{
		Cert:   testpki.WriteFile(t, dir, "server.pem", p.server.CertPEM()),
		Key:    testpki.WriteFile(t, dir, "server.key", p.server.KeyPEM()),
		CA:     testpki.WriteFile(t, dir, "ca.pem", p.zoneCA.CertPEM()),
		Verify: "optional",
		Location: `            proxy_pass http://` + app + `;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;`,
	})
}
