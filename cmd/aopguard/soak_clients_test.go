//go:build soak

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/aopguard/aopguard/certs"
	"github.com/aopguard/aopguard/internal/testpki"
)

// The soak's clients. Each kind runs in its own loop until the soak ends;
// every operation has a deadline (soakOpTimeout at most), so a client that
// hangs is a failure, never a stuck test. Report kinds are "class/detail";
// the class also prefixes the X-Soak-Client tag the upstreams check.

// startClients starts every client loop; they stop when ctx is done.
func (s *soak) startClients(ctx context.Context, wg *sync.WaitGroup) {
	loop := func(pace time.Duration, op func(n int)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				op(n)
				select {
				case <-ctx.Done():
				case <-time.After(pace/2 + rand.N(pace)):
				}
			}
		}()
	}
	// Valid Cloudflare-like clients, per policy: keep-alive HTTP/1.1,
	// keep-alive HTTP/2 and a new connection (with session resumption)
	// per request.
	for _, name := range []string{"zone", "a", "b"} {
		tg := s.targets[name]
		for i, mode := range []string{"h1-keepalive", "h2-keepalive", "new-connection"} {
			var leaf *testpki.Cert
			if mode != "new-connection" {
				leaf = tg.leaves[i%len(tg.leaves)]
			}
			tr := s.validTransport(tg, mode, leaf)
			c := &http.Client{Transport: tr}
			kind := "valid/" + name + "/" + mode
			loop(20*time.Millisecond, func(n int) {
				s.validRequest(c, tg, kind, validPaths[n%len(validPaths)], mode)
				if mode != "new-connection" && n%50 == 49 {
					tr.CloseIdleConnections()
				}
			})
		}
	}
	for _, mode := range []string{"h1-keepalive", "h2-keepalive"} {
		loop(40*time.Millisecond, s.crossWorker(mode))
	}
	loop(40*time.Millisecond, s.refusedWorker())
	loop(40*time.Millisecond, s.refusedWorker())
	loop(40*time.Millisecond, s.garbageWorker)
	loop(40*time.Millisecond, s.abortWorker)
	loop(100*time.Millisecond, func(n int) { s.slowHandshake(n%2 == 0) })
	loop(100*time.Millisecond, func(n int) { s.slowHandshake(n%2 == 1) })
	loop(100*time.Millisecond, func(n int) { s.slowHeader(n%2 == 0) })
	loop(100*time.Millisecond, func(n int) { s.slowHeader(n%2 == 1) })
	loop(60*time.Millisecond, s.bigHeader)
	loop(60*time.Millisecond, s.longSNIWorker)
	loop(60*time.Millisecond, s.h2ResetWorker())
	loop(60*time.Millisecond, s.hostMismatch)
}

var validPaths = []string{"/", "/", "/", "/", "/sleep?ms=20", "/", "/bytes?n=65536", "/", "/sleep?ms=5", "/bytes?n=300000"}

// randomScannerAddr is a random loopback address outside cloudflare_ips.
func randomScannerAddr() string { return fmt.Sprintf("127.0.1.%d", 1+rand.N(200)) }

func (s *soak) dialer(local string) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
}

// clientTLS trusts the origin's CA and presents leaf (nil: one of leaves
// at random, or none when leaves is empty too).
func (s *soak) clientTLS(sni string, leaf *testpki.Cert, leaves ...*testpki.Cert) *tls.Config {
	if sni == "" {
		sni = "127.0.0.1"
	}
	cfg := &tls.Config{RootCAs: s.serverPool, ServerName: sni}
	if leaf != nil || len(leaves) > 0 {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			l := leaf
			if l == nil {
				l = leaves[rand.N(len(leaves))]
			}
			c := l.TLS()
			return &c, nil
		}
	}
	return cfg
}

// soakTransport remembers the local address of the last connection it
// dialed, to find aopguard's log line when a handshake fails.
type soakTransport struct {
	*http.Transport
	mu   sync.Mutex
	last string
}

func (t *soakTransport) lastLocal() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.last
}

func (s *soak) register(tr *http.Transport) *http.Transport {
	s.clientsMu.Lock()
	defer s.clientsMu.Unlock()
	s.clientTransports = append(s.clientTransports, tr)
	return tr
}

// validFailed judges a valid client's failed request or handshake. Only
// one excuse is accepted: aopguard logged that it cut this connection's
// handshake at handshake_timeout, which happens when the machine is
// starved of CPU; those are counted (and bounded at the end). Anything
// else is a failure, reported with aopguard's view of the connection.
func (s *soak) validFailed(kind, local, format string, args ...any) {
	why := ""
	if local != "" {
		why = s.g.handshakeFailure(local)
	}
	if strings.Contains(why, "deadline exceeded") {
		s.loadTimeouts.Add(1)
		s.count(kind, "handshake-timeout-under-load")
		return
	}
	if why == "" {
		why = "no failed handshake logged for " + local
	}
	s.fail(kind, format+" (aopguard: %s)", append(args, why)...)
}

func (s *soak) closeClients() {
	s.clientsMu.Lock()
	defer s.clientsMu.Unlock()
	for _, tr := range s.clientTransports {
		tr.CloseIdleConnections()
	}
}

// validTransport dials from the "Cloudflare" address with a certificate
// of tg's policy (leaf, or one of tg's leaves at random).
func (s *soak) validTransport(tg *target, mode string, leaf *testpki.Cert) *soakTransport {
	cfg := s.clientTLS(tg.sni, leaf, tg.leaves...)
	st := &soakTransport{}
	d := s.dialer(soakCloudflareAddr)
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err == nil {
				st.mu.Lock()
				st.last = c.LocalAddr().String()
				st.mu.Unlock()
			}
			return c, err
		},
		TLSClientConfig:     cfg,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     time.Minute,
	}
	switch mode {
	case "h1-keepalive":
		cfg.NextProtos = []string{"http/1.1"}
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	case "h2-keepalive":
		tr.ForceAttemptHTTP2 = true
	case "new-connection":
		cfg.NextProtos = []string{"http/1.1"}
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		tr.DisableKeepAlives = true
	}
	st.Transport = s.register(tr)
	return st
}

// validRequest makes one request that must succeed at tg's upstream, or
// get a clean 502 (504) while that upstream is down.
func (s *soak) validRequest(c *http.Client, tg *target, kind, path, mode string) {
	n := s.seq.Add(1)
	s.validOps.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), soakOpTimeout)
	defer cancel()
	var connMu sync.Mutex
	local := ""
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		connMu.Lock()
		local = i.Conn.LocalAddr().String()
		connMu.Unlock()
	}})
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+s.listen+path, nil)
	req.Host = tg.host
	req.Header.Set(soakTagHeader, fmt.Sprintf("%s-%d", kind, n))
	if n%3 == 0 {
		// Forged verification headers must never reach the app.
		req.Header.Set("X-Client-Verify", "SUCCESS")
		req.Header.Set("X-Client-Cert-Fingerprint", "forged")
		req.Header.Set("X_Client_Verify", "SUCCESS")
		req.Header.Set("X-Client-Cert-Subject", "CN=forged")
	}
	t0 := time.Now()
	resp, err := c.Do(req)
	var body []byte
	if err == nil {
		body, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
	}
	t1 := time.Now()
	down := tg.up.downDuring(t0, t1)
	status := 0
	if resp != nil {
		status = resp.StatusCode
	}
	switch {
	case err != nil && ctx.Err() != nil:
		s.fail(kind, "%s %s (Host %s): no answer within %s (status %d): %v", mode, path, tg.host, soakOpTimeout, status, err)
	case err != nil && down && resp != nil:
		// The upstream died mid-response: headers were already sent, so
		// the only honest thing left is to cut the response. (Before the
		// headers, a dead upstream must be a 502, never a dropped
		// request.)
		s.count(kind, "cut-upstream-killed")
	case err != nil:
		connMu.Lock()
		l := local
		connMu.Unlock()
		if st, ok := c.Transport.(*soakTransport); ok && l == "" {
			l = st.lastLocal() // the connection failed before it was handed out
		}
		s.validFailed(kind, l, "%s %s (Host %s) at %s: %v (status %d)", mode, path, tg.host, t0.Format("15:04:05.000"), err, status)
	case status == http.StatusOK:
		var bad []string
		if got := resp.Header.Get("X-Soak-Upstream"); got != tg.up.name {
			bad = append(bad, fmt.Sprintf("answered by upstream %q", got))
		}
		if v := resp.Header.Get("X-Upstream-Saw-Client-Verify"); v != "SUCCESS" {
			bad = append(bad, fmt.Sprintf("upstream saw X-Client-Verify %q", v))
		}
		if fp := resp.Header.Get("X-Upstream-Saw-Fingerprint"); !tg.up.fps[fp] {
			bad = append(bad, fmt.Sprintf("upstream saw fingerprint %q", fp))
		}
		want := 1
		if mode == "h2-keepalive" {
			want = 2
		}
		if resp.ProtoMajor != want {
			bad = append(bad, fmt.Sprintf("protocol %s", resp.Proto))
		}
		if !strings.HasPrefix(string(body), "ok "+tg.up.name) && !strings.Contains(path, "bytes") {
			bad = append(bad, fmt.Sprintf("body %.40q", body))
		}
		if len(bad) > 0 {
			s.fail(kind, "%s %s (Host %s): 200 but %s", mode, path, tg.host, strings.Join(bad, "; "))
			return
		}
		outcome := "ok"
		if mode == "new-connection" && resp.TLS != nil {
			s.handshake.Add(1)
			if resp.TLS.DidResume {
				s.resumed.Add(1)
				outcome = "ok-resumed"
			}
		}
		s.count(kind, outcome)
		s.mu.Lock()
		s.latencies = append(s.latencies, t1.Sub(t0))
		s.mu.Unlock()
	case (status == http.StatusBadGateway || status == http.StatusGatewayTimeout) && down:
		if !strings.HasPrefix(string(body), fmt.Sprint(status)) || len(body) > 200 {
			s.fail(kind, "%d while the upstream was down, but not a short clean body: %.80q", status, body)
			return
		}
		s.count(kind, fmt.Sprintf("%d-upstream-down", status))
	default:
		s.fail(kind, "%s %s (Host %s) at %s: status %d (upstream down: %v), body %.100q", mode, path, tg.host, t0.Format("15:04:05.000"), status, down, body)
	}
}

// --- cross-host requests: admitted connections asking for another policy ---

type crossVariant struct {
	name      string
	leaf      *testpki.Cert
	sni, host string
}

func (s *soak) crossWorker(mode string) func(int) {
	variants := []crossVariant{
		{"a-cert-host-b", s.leafA, "a.example.com", "b.example.com"},
		{"b-cert-host-A-uppercase", s.leafB, "b.example.com", "A.EXAMPLE.COM"},
		{"a-cert-host-zone", s.leafA, "a.example.com", "localhost"},
		{"zone-cert-host-a-trailing-dot", s.zoneLeaf, "localhost", "a.example.com."},
		{"zone-cert-host-b-with-port", s.zoneLeaf, "localhost", "b.example.com:443"},
	}
	clients := map[string]*http.Client{}
	kind := "cross/" + mode
	return func(n int) {
		v := variants[n%len(variants)]
		c := clients[v.name]
		if c == nil {
			tg := &target{sni: v.sni, leaves: []*testpki.Cert{v.leaf}}
			c = &http.Client{Transport: s.validTransport(tg, mode, v.leaf)}
			clients[v.name] = c
		}
		ctx, cancel := context.WithTimeout(context.Background(), soakOpTimeout)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+s.listen+"/", nil)
		req.Host = v.host
		req.Header.Set(soakTagHeader, fmt.Sprintf("cross/%s-%d", v.name, s.seq.Add(1)))
		resp, err := c.Do(req)
		if err != nil {
			s.validFailed(kind, c.Transport.(*soakTransport).lastLocal(), "%s: %v", v.name, err)
			return
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusMisdirectedRequest || !strings.HasPrefix(string(body), "421") {
			s.fail(kind, "%s: status %d, body %.80q, err %v; want 421", v.name, resp.StatusCode, body, err)
			return
		}
		s.count(kind, "421")
		if n%25 == 24 {
			c.Transport.(*soakTransport).CloseIdleConnections()
		}
	}
}

// hostMismatch sends requests whose request target and Host disagree: an
// absolute-form URI against the Host header (HTTP/1.1), :authority
// against a host header (HTTP/2). Whichever aopguard judges by, the app
// must receive that same name, so a connection verified for a can never
// be served as b; the upstreams check it.
func (s *soak) hostMismatch(n int) {
	variants := []string{"h1-absolute-uri-b-host-a", "h1-absolute-uri-a-host-b", "h2-authority-b-host-a", "h2-authority-a-host-b"}
	v := variants[n%len(variants)]
	// The class in the tag: requests for b on a connection verified for a
	// must never reach an upstream; the ones for a may reach A.
	class, kind := "cross", "cross/"+v
	if strings.Contains(v, "-a-host-b") {
		class, kind = "valid", "valid/a/"+v
	}
	tag := fmt.Sprintf("%s/%s-%d", class, v, s.seq.Add(1))
	tg := s.targets["a"]
	first, second := "b.example.com", "a.example.com"
	if class == "valid" {
		first, second = second, first
	}
	if strings.HasPrefix(v, "h2") {
		c, raw, ok := s.dialTLS(kind, tg.sni, tg.leaves[0], "h2")
		if !ok {
			return
		}
		defer reset(raw)
		w := newH2Writer()
		w.get(1, first, "/", [][2]string{{"host", second}, {"x-soak-client", tag}})
		t0 := time.Now()
		if _, err := c.Write(w.bytes()); err != nil {
			s.fail(kind, "write: %v", err)
			return
		}
		outcome, err := h2Await(c, 1, time.Now().Add(10*time.Second))
		switch {
		case err != nil:
			s.fail(kind, "no answer within 10s: %v", err)
		case class == "cross" && outcome == "status-200":
			s.fail(kind, ":authority %s, host %s on a connection verified for a: answered 200", first, second)
		case class == "valid" && outcome == "status-other" && tg.up.downDuring(t0, time.Now()):
			s.count(kind, "upstream-down")
		default:
			s.count(kind, outcome)
		}
		return
	}
	c, raw, ok := s.dialTLS(kind, tg.sni, tg.leaves[0], "http/1.1")
	if !ok {
		return
	}
	defer reset(raw)
	t0 := time.Now()
	fmt.Fprintf(c, "GET https://%s/ HTTP/1.1\r\nHost: %s\r\n%s: %s\r\n\r\n", first, second, soakTagHeader, tag)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		s.fail(kind, "no response: %v", err)
		return
	}
	resp.Body.Close()
	code := resp.StatusCode
	switch {
	case class == "cross" && (code == http.StatusMisdirectedRequest || code == http.StatusBadRequest):
		s.count(kind, fmt.Sprint(code))
	case class == "valid" && code == 200 && resp.Header.Get("X-Soak-Upstream") == "a":
		s.count(kind, "200-a")
	case class == "valid" && code == http.StatusBadGateway && tg.up.downDuring(t0, time.Now()):
		s.count(kind, "502-upstream-down")
	case class == "valid" && (code == http.StatusMisdirectedRequest || code == http.StatusBadRequest):
		s.count(kind, fmt.Sprint(code))
	default:
		s.fail(kind, "request target %s, Host %s on a connection verified for a: status %d from upstream %q", first, second, code, resp.Header.Get("X-Soak-Upstream"))
	}
}

// --- clients whose handshake require mode must refuse ---

type refusedVariant struct {
	kind  string
	leaf  *testpki.Cert
	sni   string
	fresh bool // present a new self-signed certificate each time
}

func (s *soak) refusedWorker() func(int) {
	var vs []refusedVariant
	for _, sni := range []string{"", "a.example.com", "b.example.com", "localhost"} {
		vs = append(vs, refusedVariant{"nocert", nil, sni, false}, refusedVariant{"rogue", s.p.rogueLf, sni, false})
	}
	vs = append(vs,
		refusedVariant{"wrongcert/b-cert-on-a", s.leafB, "a.example.com", false},
		refusedVariant{"wrongcert/zone-cert-on-a", s.zoneLeaf, "a.example.com", false},
		refusedVariant{"wrongcert/zone-cert-on-b", s.zoneLeaf, "B.Example.Com", false},
		refusedVariant{"wrongcert/a-cert-on-zone", s.leafA, "localhost", false},
		refusedVariant{"wrongcert/a-cert-no-sni", s.leafA, "", false},
		refusedVariant{"wrongcert/a-cert-on-b", s.leafA, "b.example.com", false},
		refusedVariant{"wrongcert/expired-a", s.expiredA, "a.example.com", false},
		refusedVariant{"wrongcert/server-usage-a", s.serverUsageA, "a.example.com", false},
		refusedVariant{"nocert/longsni", nil, s.longSNI, false},
		refusedVariant{"wrongcert/longsni-a-cert", s.leafA, s.longSNI, false},
		// Endless distinct certificates: aopguard's verification cache
		// must stay bounded (the heap check at the end).
		refusedVariant{"rogue/fresh-cert", nil, "a.example.com", true},
		refusedVariant{"rogue/fresh-cert", nil, "localhost", true},
		refusedVariant{"rogue/fresh-cert", nil, "b.example.com", true},
	)
	return func(n int) {
		v := vs[rand.N(len(vs))]
		version := uint16(tls.VersionTLS13)
		if n%3 == 0 {
			version = tls.VersionTLS12
		}
		local := randomScannerAddr()
		if n%4 == 0 {
			local = soakCloudflareAddr // e.g. a health check without a certificate
		}
		s.refusedAttempt(v, version, local)
	}
}

func (s *soak) refusedAttempt(v refusedVariant, version uint16, local string) {
	kind := v.kind
	if !strings.Contains(kind, "/") {
		kind += "/" + map[uint16]string{tls.VersionTLS12: "tls1.2", tls.VersionTLS13: "tls1.3"}[version]
	}
	raw, err := s.dialer(local).Dial("tcp", s.listen)
	if err != nil {
		s.fail(kind, "dial: %v", err)
		return
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	cfg := &tls.Config{InsecureSkipVerify: true, ServerName: v.sni, MaxVersion: version}
	if v.leaf != nil {
		c := v.leaf.TLS()
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	if v.fresh {
		c, err := freshCert()
		if err != nil {
			s.fail(kind, "making a certificate: %v", err)
			return
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return c, nil }
	}
	c := tls.Client(raw, cfg)
	host := v.sni
	if host == "" || len(host) > 255 {
		host = "localhost"
	}
	stage := "handshake"
	if err = c.Handshake(); err == nil {
		// TLS 1.3: the client finishes first; the refusal arrives as an
		// alert on the first read.
		stage = "first-read"
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n%s: %s-%d\r\n\r\n", host, soakTagHeader, kind, s.seq.Add(1))
		var resp *http.Response
		resp, err = http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			resp.Body.Close()
			s.fail(kind, "SNI %.40q: a refused client got HTTP %d", v.sni, resp.StatusCode)
			return
		}
	}
	cls := errClass(err)
	if cls == "timeout" {
		s.fail(kind, "SNI %.40q: neither refused nor closed within 10s (%s): %v", v.sni, stage, err)
		return
	}
	s.count(kind, stage+":"+cls)
}

// freshCert makes a self-signed client certificate nobody trusts.
func freshCert() (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(rand.Int64N(1 << 62)),
		Subject:      pkix.Name{CommonName: fmt.Sprintf("scanner %d", rand.Int64())},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// --- garbage on the TLS port ---

func (s *soak) garbageWorker(n int) {
	variants := []string{"random-then-close", "random-then-wait", "junk-hello", "corrupt-hello", "plain-http", "partial-hello-then-close", "longsni-random-bytes"}
	v := variants[n%len(variants)]
	kind := "garbage/" + v
	raw, err := s.dialer(randomScannerAddr()).Dial("tcp", s.listen)
	if err != nil {
		s.fail(kind, "dial: %v", err)
		return
	}
	defer raw.Close()
	hello := s.hellos["a"]
	var out []byte
	wait := true
	switch v {
	case "random-then-close":
		out, wait = randomBytes(1+rand.N(2048)), false
	case "random-then-wait":
		out = randomBytes(1 + rand.N(2048))
	case "junk-hello":
		body := randomBytes(40 + rand.N(400))
		out = append([]byte{0x16, 0x03, 0x01, byte((len(body) + 4) >> 8), byte(len(body) + 4), 0x01, 0, byte(len(body) >> 8), byte(len(body))}, body...)
	case "corrupt-hello":
		out = append([]byte{}, hello...)
		for i := 0; i < 1+rand.N(8); i++ {
			out[9+rand.N(len(out)-9)] ^= byte(1 + rand.N(255))
		}
	case "plain-http":
		out = []byte("GET / HTTP/1.1\r\nHost: a.example.com\r\n" + soakTagHeader + ": garbage/plain-http\r\n\r\n")
	case "partial-hello-then-close":
		out, wait = hello[:1+rand.N(len(hello)-1)], false
	case "longsni-random-bytes":
		// A ClientHello whose 5,000-byte server name is random bytes.
		long := s.hellos["long"]
		out = append([]byte{}, long...)
		i := strings.Index(string(out), s.longSNI)
		copy(out[i:], randomBytes(len(s.longSNI)))
	}
	raw.SetDeadline(time.Now().Add(soakOpTimeout))
	if _, err := raw.Write(out); err != nil {
		s.count(kind, "write:"+errClass(err))
		return
	}
	if !wait {
		if n%2 == 0 {
			raw.(*net.TCPConn).SetLinger(0) // reset rather than FIN
		}
		s.count(kind, "client-closed")
		return
	}
	d, got, err := waitClosed(raw, soakHandshake+soakCutSlack+3*time.Second)
	if isTimeout(err) {
		s.fail(kind, "server kept the connection open %s after %d bytes of garbage (handshake_timeout %s)", d.Round(time.Millisecond), len(out), soakHandshake)
		return
	}
	if d > soakHandshake+soakCutSlack {
		s.fail(kind, "server closed only after %s (handshake_timeout %s)", d.Round(time.Millisecond), soakHandshake)
	}
	s.noteCut(kind, d)
	outcome := "server-closed"
	if got > 0 {
		outcome = "server-answered-and-closed"
	}
	s.count(kind, outcome)
}

// waitClosed reads until the peer closes the connection (or resets it) and
// returns how long that took and how much arrived; err is a timeout when
// it stayed open for limit.
func waitClosed(c net.Conn, limit time.Duration) (time.Duration, int64, error) {
	start := time.Now()
	c.SetReadDeadline(start.Add(limit))
	n, err := io.Copy(io.Discard, c)
	if err != nil && !isTimeout(err) {
		err = nil // reset: closed too
	}
	return time.Since(start), n, err
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.N(256))
	}
	return b
}

// captureHello returns the ClientHello record crypto/tls sends for sni.
func captureHello(sni string, alpn []string) ([]byte, error) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go tls.Client(a, &tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: alpn}).Handshake()
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		return nil, err
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(b, body); err != nil {
		return nil, err
	}
	return append(hdr, body...), nil
}

func (s *soak) captureHellos() {
	for name, sni := range map[string]string{"a": "a.example.com", "long": s.longSNI} {
		h, err := captureHello(sni, []string{"h2", "http/1.1"})
		if err != nil {
			s.t.Fatalf("capturing a ClientHello: %v", err)
		}
		s.hellos[name] = h
	}
	if !strings.Contains(string(s.hellos["long"]), s.longSNI) {
		s.t.Fatal("crypto/tls did not send the 5,000-character server name")
	}
}

// --- abrupt disconnects by valid clients ---

// dialTLS completes a valid client's handshake from the Cloudflare
// address; a failure is judged by validFailed for kind.
func (s *soak) dialTLS(kind, sni string, leaf *testpki.Cert, alpn ...string) (*tls.Conn, net.Conn, bool) {
	s.validOps.Add(1)
	raw, err := s.dialer(soakCloudflareAddr).Dial("tcp", s.listen)
	if err != nil {
		s.fail(kind, "dial: %v", err)
		return nil, nil, false
	}
	raw.SetDeadline(time.Now().Add(soakOpTimeout))
	cfg := s.clientTLS(sni, leaf)
	cfg.NextProtos = alpn
	c := tls.Client(raw, cfg)
	if err := c.Handshake(); err != nil {
		raw.Close()
		s.validFailed(kind, raw.LocalAddr().String(), "valid handshake failed: %v", err)
		return nil, nil, false
	}
	return c, raw, true
}

func reset(raw net.Conn) {
	if tc, ok := raw.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	raw.Close()
}

func (s *soak) randomTarget() *target {
	return s.targets[[]string{"zone", "a", "b"}[rand.N(3)]]
}

func (s *soak) abortWorker(n int) {
	variants := []string{"mid-handshake", "partial-hello", "after-handshake", "mid-request-headers", "waiting-for-upstream", "mid-response-body"}
	v := variants[n%len(variants)]
	kind := "abort/" + v
	tg := s.randomTarget()
	leaf := tg.leaves[rand.N(len(tg.leaves))]
	tag := fmt.Sprintf("%s: abort/%s-%d", soakTagHeader, v, s.seq.Add(1))
	switch v {
	case "mid-handshake":
		raw, err := s.dialer(randomScannerAddr()).Dial("tcp", s.listen)
		if err != nil {
			s.fail(kind, "dial: %v", err)
			return
		}
		raw.SetDeadline(time.Now().Add(soakOpTimeout))
		done := make(chan struct{})
		go func() { tls.Client(raw, s.clientTLS(tg.sni, leaf)).Handshake(); close(done) }()
		time.Sleep(time.Duration(rand.N(15)) * time.Millisecond)
		reset(raw)
		<-done
		s.count(kind, "client-reset")
		return
	case "partial-hello":
		raw, err := s.dialer(randomScannerAddr()).Dial("tcp", s.listen)
		if err != nil {
			s.fail(kind, "dial: %v", err)
			return
		}
		h := s.hellos["a"]
		raw.Write(h[:1+rand.N(len(h)-1)])
		raw.Close()
		s.count(kind, "client-closed")
		return
	}
	c, raw, ok := s.dialTLS(kind, tg.sni, leaf, "http/1.1")
	if !ok {
		return
	}
	defer reset(raw)
	switch v {
	case "after-handshake":
	case "mid-request-headers":
		fmt.Fprintf(c, "GET /sleep?ms=300 HTTP/1.1\r\nHost: %s\r\n%s\r\nX-Partial: ", tg.host, tag)
	case "waiting-for-upstream":
		fmt.Fprintf(c, "GET /sleep?ms=300 HTTP/1.1\r\nHost: %s\r\n%s\r\n\r\n", tg.host, tag)
		time.Sleep(time.Duration(20+rand.N(100)) * time.Millisecond)
	case "mid-response-body":
		fmt.Fprintf(c, "GET /bytes?n=4194304 HTTP/1.1\r\nHost: %s\r\n%s\r\n\r\n", tg.host, tag)
		io.ReadFull(c, make([]byte, 16<<10))
	}
	s.count(kind, "client-reset")
}

// --- slowloris ---

// slowHandshake opens a TCP connection and sends a ClientHello one byte
// every 250ms (drip) or nothing at all; handshake_timeout must cut it.
func (s *soak) slowHandshake(drip bool) {
	kind := "slowloris/handshake-silent"
	if drip {
		kind = "slowloris/handshake-drip"
	}
	raw, err := s.dialer(randomScannerAddr()).Dial("tcp", s.listen)
	if err != nil {
		s.fail(kind, "dial: %v", err)
		return
	}
	defer raw.Close()
	type result struct {
		d   time.Duration
		err error
	}
	closed := make(chan result, 1)
	go func() {
		d, _, err := waitClosed(raw, soakHandshake+soakCutSlack+3*time.Second)
		closed <- result{d, err}
	}()
	hello := s.hellos["a"]
	for i := 0; ; i++ {
		select {
		case r := <-closed:
			if isTimeout(r.err) || r.d > soakHandshake+soakCutSlack {
				s.fail(kind, "a slow handshake held its connection for %s (handshake_timeout %s)", r.d.Round(time.Millisecond), soakHandshake)
				return
			}
			s.noteCut(kind, r.d)
			s.count(kind, "cut-by-server")
			return
		case <-time.After(250 * time.Millisecond):
		}
		if drip && i < len(hello) {
			raw.Write(hello[i : i+1])
		}
	}
}

// slowHeader completes a valid handshake, then sends the request header
// one byte every 500ms (drip) or nothing; the read header timeout must cut
// it, and the request must never reach an upstream.
func (s *soak) slowHeader(drip bool) {
	kind := "slowloris/header-silent"
	if drip {
		kind = "slowloris/header-drip"
	}
	tg := s.randomTarget()
	c, raw, ok := s.dialTLS(kind, tg.sni, tg.leaves[0], "http/1.1")
	if !ok {
		return
	}
	defer raw.Close()
	type result struct {
		d   time.Duration
		err error
	}
	closed := make(chan result, 1)
	go func() {
		start := time.Now()
		c.SetReadDeadline(start.Add(soakReadHeader + soakCutSlack + 3*time.Second))
		_, err := io.Copy(io.Discard, c)
		if err != nil && !isTimeout(err) {
			err = nil
		}
		closed <- result{time.Since(start), err}
	}()
	if drip {
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n%s: slowhdr/%d\r\nX-Drip: ", tg.host, soakTagHeader, s.seq.Add(1))
	}
	for {
		select {
		case r := <-closed:
			if r.err != nil || r.d > soakReadHeader+soakCutSlack {
				s.fail(kind, "a request header dribbled for %s without being cut (read header timeout %s, err %v)", r.d.Round(time.Millisecond), soakReadHeader, r.err)
				return
			}
			s.noteCut(kind, r.d)
			s.count(kind, "cut-by-server")
			return
		case <-time.After(500 * time.Millisecond):
		}
		if drip {
			c.Write([]byte("a"))
		}
	}
}

// --- oversized headers ---

func (s *soak) bigHeader(n int) {
	variants := []string{"h1-one-70KiB-header", "h1-2000-headers", "h2-70KiB-header"}
	v := variants[n%len(variants)]
	kind := "bigheader/" + v
	tg := s.randomTarget()
	tag := fmt.Sprintf("bigheader/%s-%d", v, s.seq.Add(1))
	if v == "h2-70KiB-header" {
		c, raw, ok := s.dialTLS(kind, tg.sni, tg.leaves[0], "h2")
		if !ok {
			return
		}
		defer reset(raw)
		if c.ConnectionState().NegotiatedProtocol != "h2" {
			s.fail(kind, "h2 not negotiated")
			return
		}
		w := newH2Writer()
		w.get(1, tg.host, "/", [][2]string{{"x-soak-client", tag}, {"x-big", strings.Repeat("b", 70<<10)}})
		if _, err := c.Write(w.bytes()); err != nil {
			s.count(kind, "write:"+errClass(err))
			return
		}
		outcome, err := h2Await(c, 1, time.Now().Add(10*time.Second))
		switch {
		case err != nil && isTimeout(err):
			s.fail(kind, "no answer to an oversized HTTP/2 header within 10s")
		case outcome == "status-200":
			s.fail(kind, "an oversized HTTP/2 header was answered 200")
		default:
			s.count(kind, outcome)
		}
		return
	}
	c, raw, ok := s.dialTLS(kind, tg.sni, tg.leaves[0], "http/1.1")
	if !ok {
		return
	}
	defer reset(raw)
	var req strings.Builder
	fmt.Fprintf(&req, "GET / HTTP/1.1\r\nHost: %s\r\n%s: %s\r\n", tg.host, soakTagHeader, tag)
	if v == "h1-one-70KiB-header" {
		req.WriteString("X-Big: " + strings.Repeat("b", 70<<10) + "\r\n")
	} else {
		for i := 0; i < 2000; i++ {
			fmt.Fprintf(&req, "X-H%d: %s\r\n", i, strings.Repeat("h", 30))
		}
	}
	req.WriteString("\r\n")
	go c.Write([]byte(req.String())) // the server may stop reading
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	switch {
	case err != nil && isTimeout(err):
		s.fail(kind, "no answer and no close within 10s")
	case err != nil:
		s.count(kind, "closed:"+errClass(err))
	case resp.StatusCode == http.StatusRequestHeaderFieldsTooLarge:
		s.count(kind, "431")
	default:
		s.fail(kind, "oversized header answered %d", resp.StatusCode)
	}
}

// --- the 5,000-character server name, admitted under the zone policy ---

func (s *soak) longSNIWorker(n int) {
	kind, sni, host := "longsni/zone-cert", s.longSNI, "localhost"
	if n%3 == 1 {
		host = s.longSNI
	}
	if n%3 == 2 {
		kind, sni = "longsni/long-host-header", "localhost"
	}
	cfg := &tls.Config{InsecureSkipVerify: true, ServerName: sni, NextProtos: []string{"http/1.1"}}
	leaf := s.zoneLeaf.TLS()
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &leaf, nil }
	tr := &http.Transport{Proxy: nil, DialContext: s.dialer(soakCloudflareAddr).DialContext, TLSClientConfig: cfg,
		DisableKeepAlives: true, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), soakOpTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+s.listen+"/", nil)
	req.Host = host
	req.Header.Set(soakTagHeader, fmt.Sprintf("longsni/%d", s.seq.Add(1)))
	resp, err := (&http.Client{Transport: tr}).Do(req)
	switch {
	case err != nil && ctx.Err() != nil:
		s.fail(kind, "no answer within %s", soakOpTimeout)
	case err != nil && kind == "longsni/zone-cert":
		// Refusing an overlong name is acceptable; hanging is not.
		s.count(kind, "refused:"+errClass(err))
	case err != nil:
		s.fail(kind, "%v", err)
	default:
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Soak-Upstream") != "zone" ||
			resp.Header.Get("X-Upstream-Saw-Fingerprint") != certs.Fingerprint(s.zoneLeaf.Cert.Raw) {
			s.fail(kind, "status %d from upstream %q", resp.StatusCode, resp.Header.Get("X-Soak-Upstream"))
			return
		}
		s.count(kind, "200-zone")
	}
}

// --- HTTP/2 stream resets ---

func (s *soak) h2ResetWorker() func(int) {
	clients := map[string]*http.Client{}
	return func(n int) {
		tg := s.targets[[]string{"zone", "b"}[n%2]] // upstreams that are never killed
		if n%2 == 0 {
			s.h2Rapid(tg)
			return
		}
		c := clients[tg.name]
		if c == nil {
			c = &http.Client{Transport: s.validTransport(tg, "h2-keepalive", tg.leaves[0])}
			clients[tg.name] = c
		}
		kind := "h2cancel/" + tg.name
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(10+rand.N(150))*time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+s.listen+"/sleep?ms=500", nil)
		req.Host = tg.host
		req.Header.Set(soakTagHeader, fmt.Sprintf("h2cancel/%d", s.seq.Add(1)))
		resp, err := c.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			s.count(kind, fmt.Sprintf("finished-%d", resp.StatusCode))
		} else if errors.Is(err, context.DeadlineExceeded) {
			s.count(kind, "reset-by-client")
		} else {
			s.fail(kind, "%v", err)
		}
		cancel()
		// The connection that carried the reset still serves.
		s.validRequest(c, tg, "valid/"+tg.name+"/h2-after-reset", "/", "h2-keepalive")
	}
}

// h2Rapid opens 50 streams and resets each at once (the "rapid reset"
// pattern), then asks for one more that must be answered.
func (s *soak) h2Rapid(tg *target) {
	kind := "h2rapid/" + tg.name
	c, raw, ok := s.dialTLS(kind, tg.sni, tg.leaves[0], "h2")
	if !ok {
		return
	}
	defer reset(raw)
	w := newH2Writer()
	var id uint32 = 1
	for i := 0; i < 50; i++ {
		w.get(id, tg.host, "/sleep?ms=100", [][2]string{{"x-soak-client", fmt.Sprintf("h2rapid/%d", s.seq.Add(1))}})
		w.fr.WriteRSTStream(id, http2.ErrCodeCancel)
		id += 2
	}
	w.get(id, tg.host, "/", [][2]string{{"x-soak-client", fmt.Sprintf("h2rapid/%d", s.seq.Add(1))}})
	if _, err := c.Write(w.bytes()); err != nil {
		s.fail(kind, "write: %v", err)
		return
	}
	outcome, err := h2Await(c, id, time.Now().Add(10*time.Second))
	switch {
	case err != nil && isTimeout(err):
		s.fail(kind, "no answer to the stream after 50 resets within 10s")
	case outcome == "status-200", outcome == "goaway":
		s.count(kind, outcome)
	default:
		s.fail(kind, "stream after 50 resets: %s (%v)", outcome, err)
	}
}

// h2Writer builds what a raw HTTP/2 client sends, with x/net/http2's
// framer and HPACK encoder: the soak needs sequences no well-behaved client
// library sends (a stream reset right after its HEADERS, fifty times; a
// header block far past the server's limit; :authority and host that
// disagree), so it writes frames itself but encodes nothing by hand.
type h2Writer struct {
	buf   bytes.Buffer
	fr    *http2.Framer
	block bytes.Buffer
	enc   *hpack.Encoder
}

// newH2Writer starts with the client preface and an empty SETTINGS frame.
func newH2Writer() *h2Writer {
	w := &h2Writer{}
	w.buf.WriteString(http2.ClientPreface)
	w.fr = http2.NewFramer(&w.buf, nil)
	w.enc = hpack.NewEncoder(&w.block)
	w.fr.WriteSettings()
	return w
}

// get writes a GET for path on stream (END_STREAM), its header block split
// into HEADERS and CONTINUATION frames of at most 16 KiB.
func (w *h2Writer) get(stream uint32, authority, path string, extra [][2]string) {
	w.block.Reset()
	for _, f := range append([][2]string{{":method", "GET"}, {":scheme", "https"}, {":path", path}, {":authority", authority}}, extra...) {
		w.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	block := w.block.Bytes()
	k := min(len(block), 16384)
	w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: block[:k], EndStream: true, EndHeaders: k == len(block)})
	for block = block[k:]; len(block) > 0; block = block[k:] {
		k = min(len(block), 16384)
		w.fr.WriteContinuation(stream, k == len(block), block[:k])
	}
}

func (w *h2Writer) bytes() []byte { return w.buf.Bytes() }

// h2Await reads frames until stream answers ("status-200", or
// "status-other" for any other :status), is reset, or the connection ends
// ("goaway", "closed").
func h2Await(c net.Conn, stream uint32, deadline time.Time) (string, error) {
	c.SetReadDeadline(deadline)
	fr := http2.NewFramer(nil, bufio.NewReader(c))
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = 1 << 20
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			if isTimeout(err) {
				return "", err
			}
			return "closed", nil
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			return "goaway", nil
		case *http2.RSTStreamFrame:
			if f.StreamID == stream {
				return "rst-stream", nil
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == stream {
				if f.PseudoValue("status") == "200" {
					return "status-200", nil
				}
				return "status-other", nil
			}
		}
	}
}
