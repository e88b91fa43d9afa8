package proxy

import (
	"crypto/tls"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/aopguard/aopguard/tlsconfig"
)

// TestForwardDirectMatchesReverseProxy is a differential test: every
// request goes once through the direct path and once through
// httputil.ReverseProxy (the path it replaces for plain HTTP/1.1), and
// the app must receive the same request and the client the same answer.
func TestForwardDirectMatchesReverseProxy(t *testing.T) {
	type seenReq struct {
		Method, URI, Host, Body string
		Header                  http.Header
	}
	got := make(chan seenReq, 1)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h := r.Header.Clone()
		got <- seenReq{r.Method, r.RequestURI, r.Host, string(body), h}
		switch r.URL.Path {
		case "/hop":
			w.Header().Set("Connection", "X-Secret, close")
			w.Header().Set("X-Secret", "app internal")
			w.Header().Set("Keep-Alive", "timeout=5")
			w.Header().Set("X-Kept", "yes")
		case "/trailers":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "abc")
			w.Header().Set("X-Sum", "42")
			w.Header().Set(http.TrailerPrefix+"X-Late", "unannounced")
			return
		case "/stream":
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: 1\n\n")
			w.(http.Flusher).Flush()
			io.WriteString(w, "data: 2\n\n")
			return
		case "/switch":
			w.Header().Set("Connection", "Upgrade")
			w.Header().Set("Upgrade", "websocket")
			w.WriteHeader(http.StatusSwitchingProtocols)
			return
		case "/status":
			w.WriteHeader(http.StatusTeapot)
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello "+r.URL.Path)
	}))
	defer app.Close()

	u := NewUpstreams(zerolog.Nop(), nil)
	b, err := u.backend(app.URL, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if b.h1 == nil {
		t.Fatal("an http:// upstream without a path has no direct path")
	}
	verdict := tlsconfig.Verdict{Result: tlsconfig.Success, Fingerprint: "ab12"}

	tests := []struct {
		name, method, target, body string
		header                     http.Header
	}{
		{"plain GET", "GET", "/a/b?x=1&y=2", "", nil},
		{"client names our headers and others in Connection", "GET", "/c", "",
			http.Header{"Connection": {"X-Client-Verify, X-Client-Cert-Fingerprint, X-Forwarded-For, X-Custom, keep-alive"}, "X-Custom": {"gone"}, "X-Other": {"stays"}}},
		{"forged forwarding headers", "GET", "/f", "",
			http.Header{"X-Forwarded-For": {"6.6.6.6"}, "X-Forwarded-Host": {"evil"}, "X-Forwarded-Proto": {"http"}, "Forwarded": {"for=6.6.6.6"}}},
		{"hop-by-hop request headers", "GET", "/h", "",
			http.Header{"Proxy-Connection": {"keep-alive"}, "Keep-Alive": {"300"}, "Proxy-Authorization": {"Basic eA=="}, "Te": {"gzip"}, "Trailer": {"X-T"}}},
		{"TE trailers kept", "GET", "/te", "", http.Header{"Te": {"trailers, deflate"}}},
		{"query with ';'", "GET", "/q?a=1;b=2&c=3", "", nil},
		{"query with a bad escape", "GET", "/q?a=%zz&c=3", "", nil},
		{"query fine with escapes", "GET", "/q?a=%20b&c=%2F", "", nil},
		{"encoded path", "GET", "/p%2Fq/r%20s", "", nil},
		{"POST with a body", "POST", "/post", "payload", http.Header{"Content-Type": {"text/plain"}}},
		{"HEAD", "HEAD", "/head", "", nil},
		{"no User-Agent", "GET", "/ua", "", http.Header{}},
		{"response hop-by-hop headers", "GET", "/hop", "", nil},
		{"response trailers", "GET", "/trailers", "", nil},
		{"event stream", "GET", "/stream", "", nil},
		{"app switches protocols unasked", "GET", "/switch", "", nil},
		{"other status", "GET", "/status", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			type result struct {
				app     seenReq
				status  int
				header  http.Header
				body    string
				aborted bool
			}
			run := func(direct bool) result {
				var body io.Reader
				if tt.body != "" {
					body = strings.NewReader(tt.body)
				}
				r := httptest.NewRequest(tt.method, "https://app.example.com"+tt.target, body)
				r.RequestURI = tt.target
				r.TLS = &tls.ConnectionState{}
				r.RemoteAddr = "198.51.100.7:40000"
				r.Header = http.Header{"User-Agent": {"test-agent"}}
				if tt.header != nil {
					r.Header = tt.header.Clone()
				}
				rewriteHeaders(r.Header, verdict, false, false)
				rec := httptest.NewRecorder()
				w := &recorder{ResponseWriter: rec}
				var aborted bool
				if direct {
					aborted = b.forwardDirect(w, r)
				} else {
					aborted = forward(b.rp, w, r)
				}
				res := rec.Result()
				rb, _ := io.ReadAll(res.Body)
				var app seenReq
				select {
				case app = <-got:
					delete(app.Header, "Accept-Encoding") // net/http's client may add it; ours forwards as sent
				default:
				}
				h := res.Header.Clone()
				for k, v := range res.Trailer {
					h["Trailer:"+k] = v
				}
				return result{app, res.StatusCode, h, string(rb), aborted}
			}
			direct, viaRP := run(true), run(false)
			if d, r := fmt.Sprintf("%+v", direct.app), fmt.Sprintf("%+v", viaRP.app); d != r {
				t.Errorf("the app saw\n direct:       %s\n ReverseProxy: %s", d, r)
			}
			if direct.status != viaRP.status || direct.body != viaRP.body || direct.aborted != viaRP.aborted {
				t.Errorf("client got %d %q (aborted %v) direct, %d %q (aborted %v) via ReverseProxy",
					direct.status, direct.body, direct.aborted, viaRP.status, viaRP.body, viaRP.aborted)
			}
			for _, h := range []http.Header{direct.header, viaRP.header} {
				delete(h, "Date")
			}
			if d, r := fmt.Sprint(sorted(direct.header)), fmt.Sprint(sorted(viaRP.header)); d != r {
				t.Errorf("client headers\n direct:       %s\n ReverseProxy: %s", d, r)
			}
		})
	}
}

func sorted(h http.Header) []string {
	var out []string
	for k, vv := range h {
		out = append(out, k+": "+strings.Join(vv, " | "))
	}
	slices.Sort(out)
	return out
}

// TestForwardDirectEligible: only plain requests to an HTTP/1.1 upstream
// URL without a path or query take the direct path.
func TestForwardDirectEligible(t *testing.T) {
	u := NewUpstreams(zerolog.Nop(), nil)
	tests := []struct {
		upstream string
		header   http.Header
		want     bool
	}{
		{"http://127.0.0.1:1", nil, true},
		{"http://127.0.0.1:1/", nil, true},
		{"https://127.0.0.1:1", nil, true},
		{"unix:///run/app.sock", nil, true},
		{"http://127.0.0.1:1/prefix", nil, false},
		{"http://127.0.0.1:1/?k=v", nil, false},
		{"h2c://127.0.0.1:1", nil, false},
		{"http://127.0.0.1:1", http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}}, false},
	}
	for _, tt := range tests {
		b, err := u.backend(tt.upstream, time.Second)
		if err != nil {
			t.Fatalf("%s: %v", tt.upstream, err)
		}
		r := httptest.NewRequest("GET", "/x", nil)
		if tt.header != nil {
			r.Header = tt.header
		}
		if got := b.direct(r); got != tt.want {
			t.Errorf("%s %v: direct = %v, want %v", tt.upstream, tt.header, got, tt.want)
		}
	}
}

// TestIsEventStream: the cheap check agrees with mime.ParseMediaType.
func TestIsEventStream(t *testing.T) {
	for _, ct := range []string{"text/event-stream", "Text/Event-Stream", " text/event-stream ; charset=utf-8",
		"text/event-stream;", "text/event-streams", "text/plain", "", "event-stream", "text/event-stream/x"} {
		mt, _, _ := mime.ParseMediaType(ct)
		if want := mt == "text/event-stream"; isEventStream(ct) != want {
			t.Errorf("isEventStream(%q) = %v, mime.ParseMediaType says %v", ct, !want, want)
		}
	}
}
