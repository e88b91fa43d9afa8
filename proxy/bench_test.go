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
	"net/http/httptest"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/aopguard/aopguard/cfips"
	"github.com/aopguard/aopguard/internal/h1"
	"github.com/aopguard/aopguard/internal/testpki"
	"github.com/aopguard/aopguard/metrics"
	"github.com/aopguard/aopguard/rollout"
	"github.com/aopguard/aopguard/tlsconfig"
)

// Benchmarks of the per-request path. Run with `make bench`; nothing here
// asserts on timing. allocs/op of the loopback benchmarks counts every
// goroutine of the test binary: the client and the upstream too, which is
// why the handler benchmark also runs against a canned in-memory upstream.

// cfRequestHeaders is what a request from Cloudflare's edge carries.
func cfRequestHeaders() http.Header {
	return http.Header{
		"Accept":            {"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
		"Accept-Encoding":   {"gzip, br"},
		"Accept-Language":   {"en-GB,en;q=0.9"},
		"User-Agent":        {"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"},
		"Cf-Connecting-Ip":  {"203.0.113.195"},
		"Cf-Ipcountry":      {"GB"},
		"Cf-Ray":            {"8f1e2d3c4b5a6978-LHR"},
		"Cf-Visitor":        {`{"scheme":"https"}`},
		"Cdn-Loop":          {"cloudflare; loops=1"},
		"X-Forwarded-For":   {"203.0.113.195"},
		"X-Forwarded-Proto": {"https"},
		"Cookie":            {"session=0123456789abcdef0123456789abcdef"},
	}
}

// resetHeader makes h equal to tmpl again without allocating (the value
// slices are shared with tmpl, which nothing modifies in place).
func resetHeader(h, tmpl http.Header) {
	clear(h)
	for k, v := range tmpl {
		h[k] = v
	}
}

func BenchmarkRewriteHeaders(b *testing.B) {
	verdict := tlsconfig.Verdict{Result: tlsconfig.Success,
		Fingerprint: "3b1f0c6a2e5d4c8b9a7f6e5d4c3b2a1908f7e6d5c4b3a29181706f5e4d3c2b1a", Serial: "1a2b3c"}
	for _, bc := range []struct {
		name            string
		cfMode, trusted bool
		forged          bool
	}{
		{name: "plain"},
		{name: "cf-trusted", cfMode: true, trusted: true},
		{name: "cf-untrusted", cfMode: true},
		{name: "forged-verify-headers", forged: true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tmpl := cfRequestHeaders()
			if bc.forged {
				tmpl["X-Client-Verify"] = []string{"SUCCESS"}
				tmpl["X_client_cert_fingerprint"] = []string{"forged"}
			}
			h := http.Header{}
			b.ReportAllocs()
			for b.Loop() {
				resetHeader(h, tmpl) // part of the figure: a few map assignments
				rewriteHeaders(h, verdict, bc.cfMode, bc.trusted)
			}
		})
	}
}

// productionLogger is the access logger as cmd/aopguard builds it (JSON,
// RFC 3339 timestamps with nanoseconds, durations in fractional
// milliseconds), writing to w.
func productionLogger(b *testing.B, w io.Writer) zerolog.Logger {
	tf, du, di := zerolog.TimeFieldFormat, zerolog.DurationFieldUnit, zerolog.DurationFieldInteger
	b.Cleanup(func() { zerolog.TimeFieldFormat, zerolog.DurationFieldUnit, zerolog.DurationFieldInteger = tf, du, di })
	zerolog.TimeFieldFormat = time.RFC3339Nano
	zerolog.DurationFieldUnit = time.Millisecond
	zerolog.DurationFieldInteger = false
	return zerolog.New(w).Level(zerolog.InfoLevel).With().Timestamp().Logger()
}

// countingWriter discards what it is given but counts bytes, so the
// benchmark can report the size of an access line.
type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func BenchmarkAccessLog(b *testing.B) {
	pki := newPKI(b)
	set, err := tlsconfig.NewSet(tlsconfig.PolicySpec{Mode: tlsconfig.Require, CAs: cas(pki.zoneCA)}, nil,
		tlsconfig.Options{Tickets: mustTicketKeys(b)})
	if err != nil {
		b.Fatal(err)
	}
	p := set.Zone()
	verdict := p.Verify(cas(pki.clientZone))
	ci := &tlsconfig.ConnInfo{Policy: p, SNI: "app.example.com", Verdict: verdict, Source: cfips.Cloudflare}
	r := httptest.NewRequest("GET", "https://app.example.com/products/42?ref=home", nil)
	r.Header = cfRequestHeaders()
	r.RemoteAddr = "172.70.1.2:54321"
	w := &countingWriter{}
	h := NewHandler(nil, productionLogger(b, w), HandlerOptions{})
	rec := &recorder{status: 200, bytes: 1024}
	// cached: the shared fields are rendered already (most lines); miss:
	// every line renders them (another policy or verdict took the slot).
	for _, miss := range []bool{false, true} {
		name := map[bool]string{false: "cached", true: "miss"}[miss]
		b.Run(name, func(b *testing.B) {
			w.n = 0
			b.ReportAllocs()
			for b.Loop() {
				if miss {
					h.lines.slots[p.Index()*2].Store(nil)
				}
				h.logAccess(r, p, ci, verdict, 200, rec, 1234567*time.Nanosecond, r.Header.Get("Cf-Ray"), false, false)
			}
			b.ReportMetric(float64(w.n)/float64(b.N), "B/line")
		})
	}
}

func mustTicketKeys(b *testing.B) *tlsconfig.TicketKeys {
	k, err := tlsconfig.NewTicketKeys()
	if err != nil {
		b.Fatal(err)
	}
	return k
}

// benchMeters feeds the real Prometheus collectors, as cmd/aopguard does.
type benchMeters struct{ m *metrics.Metrics }

func (x benchMeters) Requests(host, class string) tlsconfig.Counter { return x.m.Requests(host, class) }
func (x benchMeters) RequestDuration(host string) Observer          { return x.m.RequestDuration(host) }
func (x benchMeters) UpstreamDuration(host string) Observer         { return x.m.UpstreamDuration(host) }
func (x benchMeters) UpstreamErrors(host, kind string) tlsconfig.Counter {
	return x.m.UpstreamErrors(host, kind)
}

// benchBody is the harness's default response: 1 KiB.
var benchBody = bytes.Repeat([]byte("abcdefghijklmnopqrstuvwxyz012345"), 32)

// benchUpstream answers like the harness's upstream: a fixed 1 KiB body.
func benchUpstream(b *testing.B) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd["Content-Type"] = []string{"application/octet-stream"}
		hd["Content-Length"] = []string{strconv.Itoa(len(benchBody))}
		w.Write(benchBody)
	}))
	b.Cleanup(srv.Close)
	return srv.URL
}

// benchProxy is the proxy wired as cmd/aopguard/run.go wires it (Require
// zone policy, real metrics, a rollout tracker fed by the observer, the
// production access logger writing to io.Discard), listening on loopback.
type benchProxy struct {
	pki     *testPKI
	addr    string
	handler *Handler
	routes  *Routes
	tls     *tlsconfig.Server
	ln      net.Listener // the tlsconfig.Server listener, when serve is false
}

func newBenchProxy(b *testing.B, upstreamURL string, serve bool) *benchProxy {
	pki := newPKI(b)
	serverCert := pki.server.TLS()
	m := metrics.New()
	set, err := tlsconfig.NewSet(tlsconfig.PolicySpec{Mode: tlsconfig.Require, CAs: cas(pki.zoneCA), Upstream: upstreamURL}, nil,
		tlsconfig.Options{
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &serverCert, nil },
			Tickets:        mustTicketKeys(b),
			Counter: func(l tlsconfig.Labels) tlsconfig.Counter {
				return m.Verification(l.Host, l.Mode, l.Result, l.Reason, l.Action, l.Source)
			},
		})
	if err != nil {
		b.Fatal(err)
	}
	logger := productionLogger(b, io.Discard)
	rt, err := NewUpstreams(logger, benchMeters{m}).Routes(set, 30*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	tracker := rollout.NewTracker(100)
	bp := &benchProxy{pki: pki, routes: rt}
	sink := benchSink{tracker}
	bp.handler = NewHandler(func() *Routes { return rt }, logger, HandlerOptions{Sink: sink})
	bp.tls = tlsconfig.NewServer(func() *tlsconfig.Set { return set }, tlsconfig.ServerOptions{Sink: sink})
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	bp.addr = inner.Addr().String()
	bp.ln = bp.tls.Listener(inner)
	if !serve {
		b.Cleanup(func() { bp.ln.Close() })
		return bp
	}
	srv := h1.NewServer(h1.Options{Handler: bp.handler, ConnContext: ConnContext, MaxHeaderBytes: maxHeaderBytes, ReadHeaderTimeout: guard, IdleTimeout: 120 * time.Second})
	go srv.Serve(bp.ln)
	b.Cleanup(func() { srv.Close() })
	return bp
}

func (bp *benchProxy) clientTLS() *tls.Config {
	client := bp.pki.clientZone.TLS()
	return &tls.Config{ServerName: "app.example.com", RootCAs: testpki.Pool(bp.pki.serverCA),
		Certificates: []tls.Certificate{client}, NextProtos: []string{"http/1.1"}}
}

// discardWriter is a ResponseWriter that keeps nothing but the header map,
// which it reuses.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(int)             {}
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }

// cannedUpstream answers every round trip with the same 1 KiB response
// without touching the network: two small allocations of its own per call
// (the Response and its body reader).
type cannedUpstream struct{ header http.Header }

func (c cannedUpstream) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: c.header,
		Body: io.NopCloser(bytes.NewReader(benchBody)), ContentLength: int64(len(benchBody)), Request: r}, nil
}

// BenchmarkServeHTTP sends requests straight into Handler.ServeHTTP on a
// connection that completed a real mTLS handshake through tlsconfig.Server
// (so the ConnInfo is genuine): "canned" forwards to an in-memory upstream,
// isolating aopguard's own work (the direct path); "loopback" forwards over
// the pooled transport to a real upstream on 127.0.0.1.
func BenchmarkServeHTTP(b *testing.B) {
	for _, mode := range []string{"canned", "loopback"} {
		b.Run(mode, func(b *testing.B) {
			up := "http://127.0.0.1:1" // never dialled by the canned upstream
			if mode == "loopback" {
				up = benchUpstream(b)
			}
			bp := newBenchProxy(b, up, false)
			if mode == "canned" {
				canned := cannedUpstream{header: http.Header{
					"Content-Type":   {"application/octet-stream"},
					"Content-Length": {strconv.Itoa(len(benchBody))},
				}}
				bp.routes.backends[0].rp.Transport = canned
				bp.routes.backends[0].h1 = canned // the direct path (forward.go)
			}
			errc := make(chan error, 1)
			go func() {
				c, err := tls.Dial("tcp", bp.addr, bp.clientTLS())
				if err == nil {
					b.Cleanup(func() { c.Close() })
				}
				errc <- err
			}()
			conn, err := bp.ln.Accept()
			if err != nil {
				b.Fatal(err)
			}
			if err := <-errc; err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			ctx := ConnContext(context.Background(), conn)
			r := httptest.NewRequest("GET", "https://app.example.com/products/42?ref=home", nil).WithContext(ctx)
			r.RemoteAddr = "172.70.1.2:54321"
			tmpl := cfRequestHeaders()
			r.Header = http.Header{}
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				resetHeader(r.Header, tmpl)
				clear(w.h)
				bp.handler.ServeHTTP(w, r)
			}
		})
	}
}

// BenchmarkKeepAliveTLS is the harness's scenario a in-process: one mTLS
// keep-alive connection per goroutine (GOMAXPROCS of them), HTTP/1.1, a
// 1 KiB answer from a real upstream. The client and the upstream run in
// this process, so ns/op and allocs/op include their work too.
func BenchmarkKeepAliveTLS(b *testing.B) {
	bp := newBenchProxy(b, benchUpstream(b), true)
	cfg := bp.clientTLS()
	req := []byte("GET / HTTP/1.1\r\nHost: app.example.com\r\nUser-Agent: bench\r\nCf-Ray: 8f1e2d3c4b5a6978-LHR\r\n" +
		"Cf-Connecting-Ip: 203.0.113.195\r\nAccept: */*\r\n\r\n")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		c, err := tls.Dial("tcp", bp.addr, cfg)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		br := bufio.NewReaderSize(c, 4096)
		for pb.Next() {
			if _, err := c.Write(req); err != nil {
				b.Error(err)
				return
			}
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				b.Error(err)
				return
			}
			if _, err := io.Copy(io.Discard, res.Body); err != nil || res.StatusCode != 200 {
				b.Errorf("status %d, %v", res.StatusCode, err)
				return
			}
			res.Body.Close()
		}
	})
}

// benchSink does per handshake and request what aopguard's sink does that
// costs: count the verdict and give requests to the rollout tracker.
type benchSink struct{ tracker *rollout.Tracker }

func (s benchSink) Handshake(hs tlsconfig.Handshake) {
	if p, v, ok := hs.Judged(); ok {
		p.Count(v, hs.Info.Source)
	}
}

func (s benchSink) Request(r tlsconfig.Request) {
	if r.Rejudged {
		r.Policy.Count(r.Verdict, r.Conn.Source)
	}
	s.tracker.Record(rollout.Event{Policy: r.Policy.Name(), Result: r.Verdict.Result.String(), Reason: r.Verdict.Reason,
		Source: r.Conn.Source, Remote: r.Conn.Remote, HealthCheck: r.HealthCheck})
}

// writeCountingListener counts the writes to the connections it accepts:
// with TLS above it, one per batch of records, one system call each.
type writeCountingListener struct {
	net.Listener
	writes *atomic.Int64
}

func (l writeCountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return writeCountingConn{c, l.writes}, nil
}

type writeCountingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c writeCountingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// BenchmarkH2TLS is the harness's scenario f in-process: HTTP/2 over one
// mTLS connection carrying 32 concurrent streams, a 1 KiB answer from a
// real upstream over HTTP/1.1. ns/op and allocs/op include the client's
// and the upstream's work; writes/op counts the writes (TLS records sent
// in one system call each) on the client's connection per request.
func BenchmarkH2TLS(b *testing.B) {
	bp := newBenchProxy(b, benchUpstream(b), false)
	var writes atomic.Int64
	srv := h1.NewServer(h1.Options{Handler: bp.handler, ConnContext: ConnContext, MaxHeaderBytes: maxHeaderBytes, ReadHeaderTimeout: guard, IdleTimeout: 120 * time.Second})
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(bp.tls.Listener(writeCountingListener{inner, &writes}))
	b.Cleanup(func() { srv.Close() })
	cfg := bp.clientTLS()
	cfg.NextProtos = []string{"h2"}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true, MaxConnsPerHost: 1}
	b.Cleanup(tr.CloseIdleConnections)
	url := "https://" + inner.Addr().String() + "/"
	get := func() error {
		req, _ := http.NewRequest("GET", url, nil)
		req.Host = "app.example.com"
		req.Header["Cf-Ray"] = []string{"8f1e2d3c4b5a6978-LHR"}
		req.Header["Cf-Connecting-Ip"] = []string{"203.0.113.195"}
		res, err := tr.RoundTrip(req)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		if n, err := io.Copy(io.Discard, res.Body); err != nil || res.StatusCode != 200 || res.ProtoMajor != 2 || n != int64(len(benchBody)) {
			return fmt.Errorf("%s %d, %d bytes, %v", res.Proto, res.StatusCode, n, err)
		}
		return nil
	}
	if err := get(); err != nil { // the one connection, before the clock starts
		b.Fatal(err)
	}
	writes.Store(0)
	b.ReportAllocs()
	b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0)))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := get(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(writes.Load())/float64(b.N), "writes/op")
}
