package proxy

import (
	"crypto/tls"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/aopguard/aopguard/internal/h1"
	"github.com/aopguard/aopguard/tlsconfig"
)

// Upstreams builds Routes and keeps one pooled transport per upstream URL
// across reloads, so pooled upstream connections survive a reload: for
// http:// and https:// aopguard's own HTTP/1.1 transport (internal/h1.Transport, not
// net/http's http.Transport), for h2c:// and h2:// the HTTP/2 ones.
type Upstreams struct {
	log    zerolog.Logger
	meters Meters
	h2     h2Upstreams // the HTTP/2 ones (h2c://, h2://), under mu too

	mu         sync.Mutex
	transports map[string]*h1.Transport
}

// Observer is the one method of a histogram the proxy needs.
type Observer interface{ Observe(float64) }

// Meters resolves the per-policy request metrics, once per policy when
// Routes are built, so a request only increments what it was handed.
type Meters interface {
	// Requests counts requests by status class ("1xx".."5xx").
	Requests(host, class string) tlsconfig.Counter
	// RequestDuration observes whole-request latency in seconds.
	RequestDuration(host string) Observer
	// UpstreamDuration observes the wait for the upstream's headers.
	UpstreamDuration(host string) Observer
	// UpstreamErrors counts requests the upstream did not answer; kind
	// is "unavailable" (502) or "timeout" (504).
	UpstreamErrors(host, kind string) tlsconfig.Counter
}

// NewUpstreams returns a Routes builder; meters may be nil.
func NewUpstreams(log zerolog.Logger, meters Meters) *Upstreams {
	return &Upstreams{log: log, meters: meters, transports: map[string]*h1.Transport{}}
}

var classes = [6]string{1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}

// Routes compiles a backend for every policy of set; upstreams get timeout
// to send response headers before the client is answered 504.
func (u *Upstreams) Routes(set *tlsconfig.Set, timeout time.Duration) (*Routes, error) {
	rt := &Routes{Set: set, timeout: timeout}
	proxies := map[string]backend{}
	for _, p := range set.Policies() {
		b, ok := proxies[p.Upstream()]
		if !ok {
			var err error
			if b, err = u.backend(p.Upstream(), timeout); err != nil {
				return nil, fmt.Errorf("policy %s: upstream %q: %w", p.Name(), p.Upstream(), err)
			}
			proxies[p.Upstream()] = b
		}
		if u.meters != nil {
			for i := 1; i <= 5; i++ {
				b.requests[i] = u.meters.Requests(p.Name(), classes[i])
			}
			b.duration = u.meters.RequestDuration(p.Name())
			b.upstream = u.meters.UpstreamDuration(p.Name())
			b.upErrors = [2]tlsconfig.Counter{
				u.meters.UpstreamErrors(p.Name(), "unavailable"),
				u.meters.UpstreamErrors(p.Name(), "timeout"),
			}
		}
		rt.backends = append(rt.backends, b)
	}
	return rt, nil
}

// backend is one policy's upstream with its pre-resolved metrics.
type backend struct {
	rp *httputil.ReverseProxy
	// h1 is the HTTP/1.1 transport (internal/h1) of an upstream URL
	// without a path or query, for the direct path (forward.go); nil
	// otherwise.
	h1                 http.RoundTripper
	requests           [6]tlsconfig.Counter // by status/100
	duration, upstream Observer
	upErrors           [2]tlsconfig.Counter // unavailable, timeout
}

// Prune closes idle connections of transports that rt no longer uses.
func (u *Upstreams) Prune(rt *Routes) {
	used := map[string]bool{}
	for _, p := range rt.Set.Policies() {
		used[transportKey(p.Upstream(), rt.timeout)] = true
	}
	u.pruneH2(used)
	u.mu.Lock()
	defer u.mu.Unlock()
	for k, t := range u.transports {
		if !used[k] {
			t.Close()
			delete(u.transports, k)
		}
	}
}

// backend returns the ReverseProxy for an upstream URL and, when the
// direct path can serve it, its HTTP/1.1 transport.
func (u *Upstreams) backend(raw string, timeout time.Duration) (backend, error) {
	target, err := url.Parse(raw)
	if err != nil {
		return backend{}, err
	}
	var b backend
	var t http.RoundTripper
	if h2, ok := u.h2Transport(raw, target, timeout); ok {
		t, target = h2, h2Target(target)
	} else {
		h1t := u.transport(raw, target, timeout)
		t = h1t
		if (target.Path == "" || target.Path == "/" || target.Scheme == "unix") && target.RawQuery == "" && !target.ForceQuery {
			b.h1 = h1t
		}
	}
	if target.Scheme == "unix" {
		// The socket is reached by the transport's dialer; the URL only
		// needs a syntactically valid host.
		target = &url.URL{Scheme: "http", Host: "localhost"}
	}
	b.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host // the app routes by the name the visitor asked for
			pr.SetXForwarded()
			// Set after ReverseProxy removed the headers the client listed
			// in Connection: what aopguard decided must always reach the app.
			for _, k := range [...]string{HeaderVerify, HeaderFingerprint, headerRealIP} {
				if v, ok := pr.In.Header[k]; ok {
					pr.Out.Header[k] = v
				}
			}
			// A trusted visitor address (see rewriteHeaders) replaces the
			// edge's address; a client's own X-Forwarded-For never counts.
			if v, ok := pr.In.Header[headerRealIP]; ok {
				pr.Out.Header["X-Forwarded-For"] = v
			}
		},
		Transport:    t,
		BufferPool:   bufferPool{},
		ErrorHandler: errorHandler,
		ErrorLog:     log.New(zerologWriter{u.log}, "", 0),
	}
	return b, nil
}

// transport returns the pooled transport for an upstream URL, creating it
// on first use. It speaks HTTP/1.1 with keep-alive (over TLS for https),
// forwards Accept-Encoding as the client sent it, and never goes through
// an environment proxy.
func (u *Upstreams) transport(raw string, target *url.URL, timeout time.Duration) *h1.Transport {
	key := transportKey(raw, timeout)
	u.mu.Lock()
	defer u.mu.Unlock()
	if t, ok := u.transports[key]; ok {
		return t
	}
	addr := target.Path
	if target.Scheme != "unix" {
		port := target.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[target.Scheme]
		}
		addr = net.JoinHostPort(target.Hostname(), port)
	}
	t := h1.NewTransport(transportOptions(target.Scheme, addr, target.Hostname(), timeout))
	u.transports[key] = t
	return t
}

// transportOptions dial an upstream URL scheme ("http", "https" or
// "unix"); addr is host:port or the socket path.
func transportOptions(scheme, addr, serverName string, timeout time.Duration) h1.TransportOptions {
	o := h1.TransportOptions{Network: "tcp", Address: addr, ResponseHeaderTimeout: timeout}
	switch scheme {
	case "unix":
		o.Network = "unix"
	case "https":
		o.TLS = &tls.Config{ServerName: serverName, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12}
	}
	return o
}

// copyBufferSize is the size of ReverseProxy's copy buffers: one read
// from the app and one write to the client (four full TLS records, which
// tlsconfig.Conn sends in one write(2)) per 64 KiB of a large body; with
// 32 KiB, 1 MiB took twice the system calls (about 10% more CPU).
const copyBufferSize = 64 << 10

// bufferPool recycles ReverseProxy's copy buffers. The pool holds array
// pointers rather than slices: converting the slice back to the pointer
// it came from costs nothing, where boxing a slice for sync.Pool would
// allocate on every Put.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { return new([copyBufferSize]byte) }}

func (bufferPool) Get() []byte { return buffers.Get().(*[copyBufferSize]byte)[:] }

func (bufferPool) Put(b []byte) {
	if len(b) == copyBufferSize { // always, for what Get handed out
		buffers.Put((*[copyBufferSize]byte)(b))
	}
}

// zerologWriter adapts ReverseProxy's standard-library logger.
type zerologWriter struct{ log zerolog.Logger }

func (w zerologWriter) Write(p []byte) (int, error) {
	w.log.Warn().Str("component", "reverseproxy").Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}

// transportKey identifies a reusable transport: same upstream, same timeout.
func transportKey(upstream string, timeout time.Duration) string {
	return upstream + " " + timeout.String()
}
