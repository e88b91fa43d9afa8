package proxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// The common request, to an HTTP/1.1 app without a protocol upgrade, is
// forwarded here rather than by httputil.ReverseProxy: the same header
// rules and the same answers, without ReverseProxy's copies of every
// request (the request, its header map, a second request for the trace
// context), which were ~8% of the CPU of a keep-alive request. Upgrades
// (WebSocket), HTTP/2 apps and upstream URLs with a path or query keep
// going through ReverseProxy (backend.rp), which handles them.

// direct reports whether r can take the direct path to an app reached
// through b's HTTP/1.1 transport.
func (b *backend) direct(r *http.Request) bool {
	if b.h1 == nil || r.URL.Opaque != "" {
		return false
	}
	_, up := r.Header["Upgrade"]
	return !up
}

// hopHeaders are the hop-by-hop headers (RFC 9110 section 7.6.1), removed
// in both directions.
var hopHeaders = [...]string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// removeHop removes the hop-by-hop headers from h, and those its
// Connection header names.
func removeHop(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				delete(h, http.CanonicalHeaderKey(sf))
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

// forwardDirect sends r to b's app and copies the answer to w; it reports
// whether the response was aborted midway (the server must then close the
// connection rather than let a truncated body look whole). r's header map
// is rewritten in place: the caller reads what it needs from it first.
func (b *backend) forwardDirect(w http.ResponseWriter, r *http.Request) (aborted bool) {
	h := r.Header
	// What aopguard set (rewriteHeaders) reaches the app even when the
	// client named it in Connection.
	verify, fp, realIP := h[HeaderVerify], h[HeaderFingerprint], h[headerRealIP]
	trailers := httpguts.HeaderValuesContainsToken(h["Te"], "trailers")
	removeHop(h)
	if trailers {
		h["Te"] = teTrailers
	}
	delete(h, "Forwarded")
	delete(h, "X-Forwarded-Host")
	delete(h, "X-Forwarded-Proto")
	delete(h, "X-Forwarded-For")
	setIf(h, HeaderVerify, verify)
	setIf(h, HeaderFingerprint, fp)
	setIf(h, headerRealIP, realIP)
	vals := make([]string, 2) // one allocation for both values
	vals[1] = r.Host
	h["X-Forwarded-Host"] = vals[1:2:2]
	switch {
	case realIP != nil:
		// A trusted visitor address replaces the edge's; a client's own
		// X-Forwarded-For never counts.
		h["X-Forwarded-For"] = realIP
	default:
		if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			vals[0] = ip
			h["X-Forwarded-For"] = vals[0:1:1]
		}
	}
	if r.TLS != nil {
		h["X-Forwarded-Proto"] = protoHTTPS
	} else {
		h["X-Forwarded-Proto"] = protoHTTP
	}
	// Informational answers (103 Early Hints) go to the client as they
	// come, each with its own headers only.
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, hdr textproto.MIMEHeader) error {
		wh := w.Header()
		for k, vv := range hdr {
			wh[k] = append(wh[k], vv...)
		}
		w.WriteHeader(code)
		clear(wh)
		return nil
	}}
	// out is a shallow copy: the server reads r's Body and Close after
	// the handler returns.
	out := r.WithContext(httptrace.WithClientTrace(r.Context(), trace))
	if q := cleanQuery(r.URL.RawQuery); q != r.URL.RawQuery {
		u := *r.URL
		u.RawQuery = q
		out.URL = &u
	}
	if r.ContentLength == 0 {
		out.Body = nil // nothing to send; lets a failed reused connection be retried
	}
	out.Close = false
	res, err := b.h1.RoundTrip(out)
	if err != nil {
		errorHandler(w, r, err)
		return false
	}
	defer res.Body.Close()
	if res.StatusCode == http.StatusSwitchingProtocols {
		// Nothing asked to switch: an app that does is not followed.
		errorHandler(w, r, errors.New("the app switched protocols on a request that did not ask to"))
		return false
	}
	removeHop(res.Header)
	wh := w.Header()
	for k, vv := range res.Header {
		if len(wh[k]) == 0 {
			wh[k] = vv // res is ours alone: share rather than copy
		} else {
			wh[k] = append(wh[k], vv...)
		}
	}
	announced := len(res.Trailer)
	if n := announced; n > 0 {
		names := make([]string, 0, n)
		for k := range res.Trailer {
			names = append(names, k)
		}
		wh.Add("Trailer", strings.Join(names, ", "))
	}
	w.WriteHeader(res.StatusCode)
	if err := copyBody(w, res); err != nil {
		return true
	}
	if len(res.Trailer) > 0 {
		// Trailers need a chunked response: flush before the body ends so
		// that no Content-Length is computed for it.
		http.NewResponseController(w).Flush()
		for k, vv := range res.Trailer {
			if len(res.Trailer) != announced {
				k = http.TrailerPrefix + k // names the head did not announce
			}
			wh[k] = append(wh[k], vv...)
		}
	}
	return false
}

var (
	teTrailers = []string{"trailers"}
	protoHTTPS = []string{"https"}
	protoHTTP  = []string{"http"}
)

func setIf(h http.Header, k string, v []string) {
	if v != nil {
		h[k] = v
	}
}

// copyBody copies the response body to w. A streamed body (no length:
// server-sent events, a long poll) is flushed after every read, so the
// client sees each piece as the app sends it.
func copyBody(w http.ResponseWriter, res *http.Response) error {
	stream := res.ContentLength == -1 || isEventStream(res.Header.Get("Content-Type"))
	var flush func() error
	if stream {
		flush = http.NewResponseController(w).Flush
	}
	buf := buffers.Get().(*[copyBufferSize]byte)
	defer buffers.Put(buf)
	for {
		n, rerr := res.Body.Read(buf[:])
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			if flush != nil {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// isEventStream reports a text/event-stream media type, as
// mime.ParseMediaType would read it, without its allocations.
func isEventStream(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "text/event-stream")
}

// cleanQuery returns the query as ReverseProxy forwards it: unchanged if
// every parameter parses, else re-encoded without the ones that do not
// (a ';' separator, a bad %-escape), so the app and any cache in front of
// it cannot read the query differently.
func cleanQuery(q string) string {
	for i := 0; i < len(q); i++ {
		switch q[i] {
		case ';':
			return reencode(q)
		case '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return reencode(q)
			}
			i += 2
		}
	}
	return q
}

func reencode(q string) string {
	v, _ := url.ParseQuery(q)
	return v.Encode()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
