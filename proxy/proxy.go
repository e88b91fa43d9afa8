// Package proxy moves admitted requests to the app. It judges each request
// under the policy its Host header (or absolute-form target) selects
// (re-checking the connection's client certificate when that differs from
// the policy the handshake was judged under), replaces the headers a
// client may have forged (verification, visitor address, X-Forwarded-*)
// with the real ones, forwards (forward.go; httputil.ReverseProxy for
// upgrades and HTTP/2 apps), and writes the
// access line. The HTTP engine under it, server and upstream transport,
// is package internal/h1, which knows nothing of policies: the connection
// reaches the Handler through the request context (ConnContext).
package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/aopguard/aopguard/cfips"
	"github.com/aopguard/aopguard/internal/h1"
	"github.com/aopguard/aopguard/tlsconfig"
)

// Headers set on every forwarded request. Client-supplied copies of these,
// and of any other X-Client-Cert-* header, are removed first.
const (
	HeaderVerify      = "X-Client-Verify"
	HeaderFingerprint = "X-Client-Cert-Fingerprint"
	headerCertPrefix  = "X-Client-Cert-"
)

// Routes is one immutable snapshot of admission and routing: the policy Set
// and a backend per policy. Swapping the Routes pointer is a reload.
type Routes struct {
	Set *tlsconfig.Set
	// TrustCloudflareHeaders makes CF-Connecting-IP the visitor address
	// (X-Forwarded-For, X-Real-IP) for connections whose certificate
	// verified under the request's policy, and, with
	// RequireCloudflareSource, that come from Cloudflare's ranges. Every
	// other request has CF-Connecting-IP, True-Client-IP and CF-* removed.
	TrustCloudflareHeaders  bool
	RequireCloudflareSource bool
	backends                []backend // by Policy.Index
	timeout                 time.Duration
}

// Handler serves requests from connections accepted by a tlsconfig.Server.
type Handler struct {
	routes func() *Routes
	log    zerolog.Logger
	sink   tlsconfig.Sink
	lines  *lineCache
}

// HandlerOptions are optional Handler settings.
type HandlerOptions struct {
	// Sink, if set, receives each request's verdict (Sink.Request) after
	// its response; the Handler counts and records none itself.
	Sink tlsconfig.Sink
}

// NewHandler returns a Handler that reads the current Routes on every
// request and writes one access line per request to log.
func NewHandler(routes func() *Routes, log zerolog.Logger, opts HandlerOptions) *Handler {
	return &Handler{routes: routes, log: log, sink: opts.Sink, lines: &lineCache{base: log}}
}

// healthCheckAgent is in the User-Agent of Cloudflare's load-balancer
// health monitors.
const healthCheckAgent = "Cloudflare-Traffic-Manager"

type connKey struct{}

// ConnContext is the http.Server.ConnContext hook that makes the connection
// (and so its tlsconfig.ConnInfo) reachable from each request.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

var (
	verifySuccess = []string{"SUCCESS"}
	verifyNone    = []string{"NONE"}
	// lastFingerprint is the most recent X-Client-Cert-Fingerprint value.
	// Cloudflare presents the same certificate on all its connections, so
	// reusing the slice (never modified, like the two above) saves an
	// allocation per request.
	lastFingerprint atomic.Pointer[[]string]
)

// fingerprintHeader returns the header value for fp.
func fingerprintHeader(fp string) []string {
	if last := lastFingerprint.Load(); last != nil && (*last)[0] == fp {
		return *last
	}
	v := []string{fp}
	lastFingerprint.Store(&v)
	return v
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	c, _ := r.Context().Value(connKey{}).(net.Conn)
	ci := tlsconfig.Info(c)
	if ci == nil {
		// Only reachable by wiring a listener that is not a tlsconfig
		// Server's: fail closed.
		http.Error(w, "500 internal server error", http.StatusInternalServerError)
		h.log.Error().Msg("request on a connection aopguard did not handshake; refusing")
		return
	}
	rt := h.routes()
	host, ok := hostOnly(r.Host)
	if !ok {
		// A Host that is not host[:port] could be read differently by the
		// app than by our policy match: refuse rather than guess, and
		// close, as for any malformed request.
		w.Header().Set("Connection", "close")
		http.Error(w, "400 bad request: malformed Host header", http.StatusBadRequest)
		h.log.Info().Str("host", Clip(r.Host)).Str("remote", r.RemoteAddr).Str("sni", Clip(ci.SNI)).Int("status", http.StatusBadRequest).Msg("request")
		return
	}
	if host == "" {
		host = ci.SNI
	}
	p, known := rt.Set.Lookup(host)
	if !known {
		// strict_hosts: a Host that matches no configured host is not
		// served, whatever the connection's certificate.
		http.Error(w, "421 misdirected request: not a configured host", http.StatusMisdirectedRequest)
		h.log.Info().Str("host", Clip(r.Host)).Str("remote", r.RemoteAddr).Str("sni", Clip(ci.SNI)).
			Int("status", http.StatusMisdirectedRequest).Str("reason", "unknown_host").Msg("request")
		return
	}
	verdict := ci.Verdict
	rejudged := p != ci.Policy
	if rejudged {
		// The Host selects another policy than the handshake was judged
		// under (another host, or the same one after a reload): judge the
		// connection's certificate under this request's policy.
		verdict = p.VerifyTLS(ci.Peer, ci.Version)
	}
	rec := recorder{ResponseWriter: w}
	b := &rt.backends[p.Index()]
	aborted := false
	var upstreamStart time.Time
	health, ray := false, ""
	if p.ActionFor(verdict) == tlsconfig.Reject {
		health, ray = strings.Contains(r.Header.Get("User-Agent"), healthCheckAgent), r.Header.Get("Cf-Ray")
		http.Error(&rec, "421 misdirected request: this connection's client certificate is not accepted for "+host, http.StatusMisdirectedRequest)
	} else {
		trusted := rt.TrustCloudflareHeaders && verdict.Result == tlsconfig.Success &&
			(!rt.RequireCloudflareSource || ci.Source == cfips.Cloudflare)
		rewriteHeaders(r.Header, verdict, rt.TrustCloudflareHeaders, trusted)
		if up, ok := r.Header["Upgrade"]; ok && !(len(up) == 1 && strings.EqualFold(up[0], "websocket")) {
			// Only WebSocket is passed on: after an upgrade to anything
			// else (h2c above all) the app would read requests on the
			// tunnel that were never judged by policy or Host here.
			delete(r.Header, "Upgrade")
		}
		upstreamStart = time.Now()
		// Read before forwarding: the direct path rewrites r.Header.
		health, ray = strings.Contains(r.Header.Get("User-Agent"), healthCheckAgent), r.Header.Get("Cf-Ray")
		if b.direct(r) {
			aborted = b.forwardDirect(&rec, r)
		} else {
			aborted = forward(b.rp, &rec, r)
		}
	}
	status := rec.status
	if status == 0 {
		status = http.StatusOK // handler wrote nothing: net/http sends 200
	}
	elapsed := time.Since(start)
	if cls := status / 100; cls >= 1 && cls <= 5 && b.requests[cls] != nil {
		b.requests[cls].Inc()
	}
	if b.duration != nil {
		b.duration.Observe(elapsed.Seconds())
		switch {
		case rec.upstreamErr == nil && !upstreamStart.IsZero() && !rec.headerAt.IsZero():
			b.upstream.Observe(rec.headerAt.Sub(upstreamStart).Seconds())
		case rec.upstreamErr != nil && status == http.StatusGatewayTimeout:
			b.upErrors[1].Inc()
		case rec.upstreamErr != nil && status == http.StatusBadGateway:
			b.upErrors[0].Inc()
		}
	}
	if h.sink != nil {
		h.sink.Request(tlsconfig.Request{Policy: p, Verdict: verdict, Conn: ci, Rejudged: rejudged, Status: status, HealthCheck: health})
	}
	h.logAccess(r, p, ci, verdict, status, &rec, elapsed, ray, health, aborted)
	if aborted {
		// The server closes the connection without completing the
		// response, so a truncated body never looks whole.
		panic(http.ErrAbortHandler)
	}
}

// Refused writes the access line of a request the HTTP engine refused
// before it reached ServeHTTP (a malformed head, an unsupported framing);
// it is the h1.Options.Refused hook.
func (h *Handler) Refused(r h1.Refusal) {
	e := h.log.Info()
	if r.Request != nil {
		e = e.Str("host", Clip(r.Request.Host)).Str("remote", r.Request.RemoteAddr).Str("proto", r.Request.Proto).
			Str("method", Clip(r.Request.Method)).Str("path", Clip(r.Request.URL.Path))
	} else if r.Conn != nil {
		e = e.Str("remote", r.Conn.RemoteAddr().String())
	}
	if ci := tlsconfig.Info(r.Conn); ci != nil {
		e = e.Str("sni", Clip(ci.SNI)).Str("source", ci.Source)
	}
	e.Int("status", r.Status).Str("reason", "refused_request").Str("detail", r.Reason).Msg("request")
}

// forward runs ReverseProxy and reports whether it aborted the response
// (a body copy failed midway), so the request still gets its access line.
func forward(rp http.Handler, w http.ResponseWriter, r *http.Request) (aborted bool) {
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				panic(p)
			}
			aborted = true
		}
	}()
	rp.ServeHTTP(w, r)
	return false
}

// logAccess writes the access line of an answered request. The fields
// that depend on the policy, the verdict and the handshake are the same on
// most lines (Cloudflare presents one certificate on all its
// connections), so they are rendered once into a logger that carries them
// (see lineCache) and copied into each line after.
func (h *Handler) logAccess(r *http.Request, p *tlsconfig.Policy, ci *tlsconfig.ConnInfo, verdict tlsconfig.Verdict,
	status int, rec *recorder, elapsed time.Duration, ray string, health, aborted bool) {
	e := h.lines.logger(lineKey{p: p, v: verdict, sni: ci.SNI, resumed: ci.Resumed, curve: ci.CurveID, source: ci.Source}).Info()
	e = e.Str("remote", r.RemoteAddr).
		Str("host", Clip(r.Host)).
		Str("proto", r.Proto).
		Str("method", r.Method).
		Str("path", r.URL.Path).
		Int("status", status).
		Int64("bytes", rec.bytes).
		Dur("duration", elapsed)
	if ray != "" {
		e = e.Str("cf_ray", ray)
	}
	if rec.upstreamErr != nil {
		e = e.AnErr("upstream_error", rec.upstreamErr)
	}
	if health {
		e = e.Bool("health_check", true)
	}
	if aborted {
		e = e.Bool("aborted", true)
	}
	e.Msg("request")
}

// lineKey is what an access line's shared fields depend on.
type lineKey struct {
	p       *tlsconfig.Policy
	v       tlsconfig.Verdict
	sni     string
	resumed bool
	curve   tls.CurveID
	source  string
}

// lineCache holds loggers carrying the shared fields of recent access
// lines: a few slots, chosen by policy and resumption, each holding the
// last key seen there. A miss renders the fields and replaces the slot,
// so mixed traffic costs what it did before caching, and the cache's
// memory is fixed.
type lineCache struct {
	base  zerolog.Logger
	slots [16]atomic.Pointer[cachedLine]
}

type cachedLine struct {
	key lineKey
	log zerolog.Logger
}

func (c *lineCache) logger(k lineKey) *zerolog.Logger {
	slot := &c.slots[(k.p.Index()*2+btoi(k.resumed))%len(c.slots)]
	if l := slot.Load(); l != nil && l.key == k {
		return &l.log
	}
	l := &cachedLine{key: k, log: lineFields(c.base.With(), k).Logger()}
	slot.Store(l)
	return &l.log
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// lineFields adds an access line's shared fields (see lineKey).
func lineFields(c zerolog.Context, k lineKey) zerolog.Context {
	c = c.Str("policy", k.p.Name()).
		Str("sni", Clip(k.sni)).
		Bool("resumed", k.resumed).
		Str("verify", k.v.Result.String()).
		Str("action", k.p.ActionFor(k.v).String())
	if k.v.Reason != "" {
		c = c.Str("reason", k.v.Reason)
	}
	if k.v.Fingerprint != "" {
		c = c.Str("fingerprint", k.v.Fingerprint).Str("serial", k.v.Serial).Str("cert_signature", tlsconfig.SignatureName(k.v))
	}
	return c.Str("key_agreement", tlsconfig.KeyAgreementName(k.curve)).Str("source", k.source)
}

// rewriteHeaders prepares the inbound request's headers for forwarding:
// it removes every client-supplied verification header and X-Real-IP
// (aopguard's to set), sets the real verdict, and handles Cloudflare's
// visitor headers: when cfMode is on, a trusted request gets X-Real-IP from
// a well-formed CF-Connecting-IP, any other loses CF-Connecting-IP,
// True-Client-IP and every CF-* header. The backend's Rewrite copies the
// headers aopguard set to the outbound request after ReverseProxy has
// dropped hop-by-hop headers, so a client naming them in Connection cannot
// remove them.
func rewriteHeaders(h http.Header, v tlsconfig.Verdict, cfMode, trusted bool) {
	for k := range h {
		switch {
		case ours(k), foldEqual(k, headerRealIP), forwardedLookalike(k):
			delete(h, k)
		case cfMode && !trusted && (hasFoldPrefix(k, "Cf-") || hasFoldPrefix(k, "Cf_") || foldEqual(k, "True-Client-Ip")):
			delete(h, k)
		}
	}
	if trusted {
		// A zone ("fe80::1%eth0") is never a visitor's address; netip
		// would accept any text after the '%'.
		if ip, err := netip.ParseAddr(strings.TrimSpace(h.Get("Cf-Connecting-Ip"))); err == nil && ip.Zone() == "" {
			h[headerRealIP] = []string{ip.Unmap().String()}
		}
	}
	switch v.Result {
	case tlsconfig.Success:
		h[HeaderVerify] = verifySuccess
	case tlsconfig.None:
		h[HeaderVerify] = verifyNone
	default:
		h[HeaderVerify] = []string{v.Header()}
	}
	if v.Fingerprint != "" {
		h[HeaderFingerprint] = fingerprintHeader(v.Fingerprint)
	}
}

// ours reports whether a header name is one of the verification headers
// aopguard sets, ignoring case and treating "_" as "-": CGI-style apps map
// X_Client_Verify and X-Client-Verify to the same HTTP_X_CLIENT_VERIFY.
func ours(k string) bool {
	if len(k) < len(headerCertPrefix) || (k[0] != 'X' && k[0] != 'x') {
		return false
	}
	return foldEqual(k, HeaderVerify) || foldEqual(k[:len(headerCertPrefix)], headerCertPrefix)
}

// forwardedLookalike reports a header name that differs from one
// ReverseProxy sets (X-Forwarded-For, -Host, -Proto, and Forwarded, which
// it removes) only by case or '_': ReverseProxy replaces the exact names,
// but an app that reads headers CGI-style (HTTP_X_FORWARDED_FOR) would
// take X_Forwarded_For for the real one.
func forwardedLookalike(k string) bool {
	switch len(k) {
	case len("X-Forwarded-For"), len("X-Forwarded-Host"), len("X-Forwarded-Proto"):
		return foldEqual(k, "X-Forwarded-For") || foldEqual(k, "X-Forwarded-Host") || foldEqual(k, "X-Forwarded-Proto")
	case len("Forwarded"):
		return foldEqual(k, "Forwarded")
	}
	return false
}

// headerRealIP carries a trusted visitor address from the handler to the
// backend's Rewrite, and on to the app.
const headerRealIP = "X-Real-Ip"

func hasFoldPrefix(k, prefix string) bool {
	return len(k) >= len(prefix) && foldEqual(k[:len(prefix)], prefix)
}

// Clip bounds a client-supplied string (a server name, a Host) before it
// goes into a log line.
func Clip(s string) string {
	const max = 256
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

// foldEqual compares header names case-insensitively with '_' == '-'.
func foldEqual(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x == '_' {
			x = '-'
		}
		if y == '_' {
			y = '-'
		}
		if x|0x20 != y|0x20 { // ASCII case fold; '-' is unchanged by it
			return false
		}
	}
	return true
}

// hostOnly splits the port off a Host header value ("a.b:443",
// "[::1]:8443") and reports whether the value was well formed: a name or
// address, optionally followed by a numeric port. A bare IPv6 address is
// accepted as the address it is.
func hostOnly(h string) (string, bool) {
	if strings.HasPrefix(h, "[") {
		end := strings.IndexByte(h, ']')
		if end < 0 || !validPort(h[end+1:]) || net.ParseIP(h[1:end]) == nil {
			return "", false // brackets hold an IP address, nothing else
		}
		return h[1:end], true
	}
	switch strings.Count(h, ":") {
	case 0:
		if !validName(h) {
			return "", false
		}
		return h, true
	case 1:
		i := strings.IndexByte(h, ':')
		if !validPort(h[i:]) || !validName(h[:i]) {
			return "", false
		}
		return h[:i], true
	}
	if ip := net.ParseIP(h); ip != nil {
		return h, true
	}
	return "", false
}

// validName refuses empty labels, which nginx refuses too: a leading
// dot, two dots in a row ("a.example.com.." would match the zone under a
// wildcard here, and an app that trims dots would take it for another
// host), a lone dot. One trailing dot (the root) is a valid name.
func validName(h string) bool {
	if h == "" {
		return true // no Host: the server name decides
	}
	return h[0] != '.' && !strings.Contains(h, "..")
}

// validPort accepts "" or ":" followed by up to five digits.
func validPort(p string) bool {
	if p == "" {
		return true
	}
	if p[0] != ':' || len(p) > 6 {
		return false
	}
	for _, c := range p[1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// recorder notes the status and size of a response for the access line. It
// unwraps for http.ResponseController, so flushing (SSE, chunked) and
// hijacking (WebSocket) reach the real connection.
type recorder struct {
	http.ResponseWriter
	status      int
	bytes       int64
	headerAt    time.Time // when the final status was written
	upstreamErr error
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		r.status, r.headerAt = code, time.Now()
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status, r.headerAt = http.StatusOK, time.Now()
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Hijack takes over the connection for a protocol upgrade. ReverseProxy
// answers 101 on the hijacked connection itself, never through
// WriteHeader, so the status is recorded here.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err == nil && r.status == 0 {
		r.status, r.headerAt = http.StatusSwitchingProtocols, time.Now()
	}
	return c, brw, err
}

// errorHandler answers for an upstream that failed: 504 when it timed out,
// 502 otherwise, with a short body that leaks nothing internal. The cause
// goes to the access line.
func errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	if rec, ok := w.(*recorder); ok {
		rec.upstreamErr = err
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away; nobody is left to answer.
		w.WriteHeader(499)
		return
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		http.Error(w, "504 gateway timeout: the upstream did not answer in time", http.StatusGatewayTimeout)
		return
	}
	http.Error(w, "502 bad gateway: the upstream is unavailable", http.StatusBadGateway)
}
