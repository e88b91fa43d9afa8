package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/aopguard/aopguard/tlsconfig"
)

func TestHostOnly(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"a.b", "a.b", true},
		{"a.b:443", "a.b", true},
		{"A.B", "A.B", true}, // case is left to tlsconfig.Set.Match
		{"a.b.", "a.b.", true},
		{"a.b:", "a.b", true},
		{"127.0.0.1", "127.0.0.1", true},
		{"127.0.0.1:8443", "127.0.0.1", true},
		{"[::1]:8443", "::1", true},
		{"[::1]", "::1", true},
		{"", "", true},
		{"::1", "::1", true}, // bare IPv6: not RFC-valid, but unambiguous
		{"2001:db8::1", "2001:db8::1", true},
		{"b.example.com:1:2", "", false},
		{"a.b:https", "", false},
		{"a.b:4430000", "", false},
		{"[::1", "", false},
		{"[::1]x", "", false},
		{"[:]", "", false}, // found by FuzzHostOnly
		{"[a.b]:443", "", false},
		// Empty labels: nginx refuses them; a wildcard would match them.
		{"other.example.com..", "", false},
		{"other.example.com..:443", "", false},
		{"a..b", "", false},
		{".a.b", "", false},
		{".", "", false},
	}
	for _, tt := range tests {
		got, ok := hostOnly(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("hostOnly(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestOursMatchesLookalikes(t *testing.T) {
	for k, want := range map[string]bool{
		"X-Client-Verify": true, "X_Client_Verify": true, "x-client-verify": true, "X-CLIENT_VERIFY": true,
		"X-Client-Cert-Fingerprint": true, "X_Client_Cert_Anything": true, "X-Client-Cert-": true,
		"X-Client-Verified": false, "X-Client-Certificate": false, "X-Forwarded-For": false, "Y-Client-Verify": false,
	} {
		if got := ours(k); got != want {
			t.Errorf("ours(%q) = %v, want %v", k, got, want)
		}
	}
}

// TestFailsClosedWithoutConnInfo: a request that did not arrive over a
// connection handshaken by a tlsconfig.Server is refused with 500 and
// never forwarded.
func TestFailsClosedWithoutConnInfo(t *testing.T) {
	pki := newPKI(t)
	up := newUpstream(t, "app", nil)
	// The harness provides valid Routes whose every policy admits anyone.
	h := newHarness(t, pki, harnessConfig{
		zone:  tlsconfig.PolicySpec{Mode: tlsconfig.Off, Upstream: up.url},
		hosts: []tlsconfig.PolicySpec{{Name: "a.example.com", Mode: tlsconfig.Off, Upstream: up.url}},
	})
	sink := newLogSink()
	handler := NewHandler(h.routes.Load, zerolog.New(sink), HandlerOptions{})

	serve := func(t *testing.T, srv *httptest.Server, tls bool) (int, string) {
		srv.Config.ConnContext = ConnContext
		if tls {
			srv.StartTLS()
		} else {
			srv.Start()
		}
		defer srv.Close()
		req, _ := http.NewRequest("GET", srv.URL+"/x", nil)
		req.Host = "a.example.com"
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	tests := []struct {
		name string
		do   func(t *testing.T) (int, string)
	}{
		{"ServeHTTP without a connection", func(t *testing.T) (int, string) {
			w := httptest.NewRecorder()
			handler.ServeHTTP(w, httptest.NewRequest("GET", "https://a.example.com/x", nil))
			return w.Code, w.Body.String()
		}},
		{"plain TCP connection", func(t *testing.T) (int, string) {
			return serve(t, httptest.NewUnstartedServer(handler), false)
		}},
		{"TLS connection from another listener", func(t *testing.T) (int, string) {
			return serve(t, httptest.NewUnstartedServer(handler), true)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(sink.find(func(m map[string]any) bool { return m["level"] == "error" }))
			status, body := tt.do(t)
			if status != http.StatusInternalServerError {
				t.Errorf("status %d, want 500", status)
			}
			if strings.Contains(body, "upstream") {
				t.Errorf("body %q came from the upstream", body)
			}
			if n := up.hits(); n != 0 {
				t.Errorf("upstream received %d requests, want none", n)
			}
			after := len(sink.find(func(m map[string]any) bool { return m["level"] == "error" }))
			if after != before+1 {
				t.Errorf("%d error lines logged, want 1", after-before)
			}
			if n := len(sink.find(func(m map[string]any) bool { return m["message"] == "request" })); n != 0 {
				t.Errorf("%d access lines for a refused request", n)
			}
		})
	}
}
