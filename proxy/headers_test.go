package proxy

import (
	"bufio"
	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/aopguard/aopguard/internal/testpki"
	"github.com/aopguard/aopguard/tlsconfig"
)

// headerHarness has one host per mode, all forwarding to one upstream.
func headerHarness(t *testing.T) (*testPKI, *harness, *upstream) {
	t.Helper()
	pki := newPKI(t)
	up := newUpstream(t, "app", nil)
	h := newHarness(t, pki, harnessConfig{
		zone: tlsconfig.PolicySpec{Mode: tlsconfig.Off, Upstream: up.url},
		hosts: []tlsconfig.PolicySpec{
			{Name: "req.example.com", Mode: tlsconfig.Require, CAs: cas(pki.caA), Upstream: up.url},
			{Name: "log.example.com", Mode: tlsconfig.LogOnly, CAs: cas(pki.caA), Upstream: up.url},
			{Name: "off.example.com", Mode: tlsconfig.Off, Upstream: up.url},
		},
	})
	return pki, h, up
}

var protocols = []struct {
	name string
	h2   bool
}{{"HTTP1.1", false}, {"HTTP2", true}}

func TestForwardedHeaders(t *testing.T) {
	pki, h, up := headerHarness(t)
	tests := []struct {
		name   string
		sni    string
		host   string // Host header; the SNI when empty
		cert   *testpki.Cert
		verify string
		fp     *testpki.Cert // whose fingerprint the upstream gets; nil: none
	}{
		{name: "require valid", sni: "req.example.com", cert: pki.clientA, verify: "SUCCESS", fp: pki.clientA},
		{name: "log-only valid", sni: "log.example.com", cert: pki.clientA, verify: "SUCCESS", fp: pki.clientA},
		{name: "log-only untrusted", sni: "log.example.com", cert: pki.clientX, verify: "FAILED:untrusted", fp: pki.clientX},
		{name: "log-only expired", sni: "log.example.com", cert: pki.expiredA, verify: "FAILED:expired", fp: pki.expiredA},
		{name: "log-only wrong usage", sni: "log.example.com", cert: pki.wrongUsageA, verify: "FAILED:wrong_usage", fp: pki.wrongUsageA},
		{name: "log-only no cert", sni: "log.example.com", verify: "NONE"},
		{name: "off no cert", sni: "off.example.com", verify: "NONE"},
		{name: "off cert not requested", sni: "off.example.com", cert: pki.clientA, verify: "NONE"},
		{name: "zone off", sni: "zone.example.net", verify: "NONE"},
		// The handshake saw the certificate under log.example.com; the
		// Host re-checks it under off.example.com: no verdict, but the
		// certificate was shown, so its fingerprint goes along.
		{name: "re-check into off", sni: "log.example.com", host: "off.example.com", cert: pki.clientA, verify: "NONE", fp: pki.clientA},
		{name: "host with port", sni: "log.example.com", host: "log.example.com:8443", cert: pki.clientA, verify: "SUCCESS", fp: pki.clientA},
	}
	for _, proto := range protocols {
		for i, tt := range tests {
			t.Run(proto.name+"/"+tt.name, func(t *testing.T) {
				host := tt.host
				if host == "" {
					host = tt.sni
				}
				c, _ := h.client(t, clientOpts{sni: tt.sni, cert: tt.cert, h2: proto.h2})
				path := fmt.Sprintf("/fwd/%s/%d", proto.name, i)
				res := get(t, c, "GET", "https://"+tt.sni+path, host, http.Header{
					"X-Forwarded-For":   {"203.0.113.7"},
					"X-Forwarded-Proto": {"http"},
					"X-Forwarded-Host":  {"evil.example"},
					"Forwarded":         {"for=203.0.113.7;proto=http"},
				})
				if res.status != http.StatusOK || res.body != "upstream app\n" {
					t.Fatalf("got %d %q, want 200 from the upstream", res.status, res.body)
				}
				if proto.h2 && res.proto != 2 {
					t.Fatalf("response over HTTP/%d, want HTTP/2", res.proto)
				}
				s := up.one(t, path)
				fp := ""
				if tt.fp != nil {
					fp = fingerprint(tt.fp)
				}
				wantVerifyHeaders(t, s.Header, tt.verify, fp)
				if s.Host != host {
					t.Errorf("upstream Host = %q, want %q", s.Host, host)
				}
				for k, want := range map[string][]string{
					"X-Forwarded-For":   {"127.0.0.1"},
					"X-Forwarded-Proto": {"https"},
					"X-Forwarded-Host":  {host},
					"Forwarded":         nil,
				} {
					if got := s.Header[k]; !slices.Equal(got, want) {
						t.Errorf("upstream %s = %q, want %q", k, got, want)
					}
				}
			})
		}
	}
}

// forged is every verification header a client might try to smuggle in,
// in several spellings and with several values.
var forged = http.Header{
	"X-Client-Verify":           {"SUCCESS", "SUCCESS"},
	"x-client-verify":           {"SUCCESS"},
	"X-CLIENT-VERIFY":           {"SUCCESS"},
	"X-Client-Cert-Fingerprint": {"forged", "forged2"},
	"x-client-cert-fingerprint": {"forged3"},
	"X-Client-Cert-Anything":    {"x"},
	"X-Client-Cert-Subject":     {"CN=admin"},
	"x-client-cert-serial":      {"1"},
}

func TestForgedVerifyHeadersStripped(t *testing.T) {
	pki, h, up := headerHarness(t)
	tests := []struct {
		name   string
		sni    string
		cert   *testpki.Cert
		verify string
		fp     *testpki.Cert
	}{
		{"valid", "log.example.com", pki.clientA, "SUCCESS", pki.clientA},
		{"require valid", "req.example.com", pki.clientA, "SUCCESS", pki.clientA},
		{"untrusted", "log.example.com", pki.clientX, "FAILED:untrusted", pki.clientX},
		{"no cert", "log.example.com", nil, "NONE", nil},
		{"off", "off.example.com", nil, "NONE", nil},
	}
	for _, proto := range protocols {
		for i, tt := range tests {
			t.Run(proto.name+"/"+tt.name, func(t *testing.T) {
				c, _ := h.client(t, clientOpts{sni: tt.sni, cert: tt.cert, h2: proto.h2})
				path := fmt.Sprintf("/forged/%s/%d", proto.name, i)
				res := get(t, c, "GET", "https://"+tt.sni+path, "", forged)
				if res.status != http.StatusOK {
					t.Fatalf("status %d, want 200", res.status)
				}
				fp := ""
				if tt.fp != nil {
					fp = fingerprint(tt.fp)
				}
				wantVerifyHeaders(t, up.one(t, path).Header, tt.verify, fp)
			})
		}
	}

	// The same over a hand-written HTTP/1.1 request, which net/http's
	// client cannot mangle: odd spacing and casing, repeated lines.
	t.Run("raw HTTP1.1", func(t *testing.T) {
		c := h.dial(t, clientOpts{sni: "log.example.com", cert: pki.clientX}, "http/1.1")
		res := rawRoundTrip(t, c, bufio.NewReader(c), "GET /forged/raw HTTP/1.1\r\n"+
			"Host: log.example.com\r\n"+
			"X-Client-Verify:SUCCESS\r\n"+
			"x-cLiEnT-vErIfY:   SUCCESS\r\n"+
			"X-Client-Verify: SUCCESS\r\n"+
			"x-client-cert-fingerprint: forged\r\n"+
			"X-CLIENT-CERT-ANYTHING: x\r\n"+
			"\r\n")
		if res.status != http.StatusOK {
			t.Fatalf("status %d, want 200", res.status)
		}
		wantVerifyHeaders(t, up.one(t, "/forged/raw").Header, "FAILED:untrusted", fingerprint(pki.clientX))
	})
}

// TestConnectionHeaderCannotDropVerifyHeaders: a client naming the
// verification headers in its Connection header must not make them vanish
// on the way to the upstream. ReverseProxy deletes every header the inbound
// Connection header lists (RFC 7230 hop-by-hop handling) after the proxy
// has set its own, so without care the upstream gets no verdict at all.
func TestConnectionHeaderCannotDropVerifyHeaders(t *testing.T) {
	pki, h, up := headerHarness(t)
	tests := []struct {
		name   string
		sni    string
		cert   *testpki.Cert
		verify string
		fp     *testpki.Cert
	}{
		{"untrusted", "log.example.com", pki.clientX, "FAILED:untrusted", pki.clientX},
		{"no cert", "log.example.com", nil, "NONE", nil},
		{"valid", "log.example.com", pki.clientA, "SUCCESS", pki.clientA},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := h.dial(t, clientOpts{sni: tt.sni, cert: tt.cert}, "http/1.1")
			path := fmt.Sprintf("/connection/%d", i)
			res := rawRoundTrip(t, c, bufio.NewReader(c), "GET "+path+" HTTP/1.1\r\n"+
				"Host: "+tt.sni+"\r\n"+
				"Connection: keep-alive, X-Client-Verify, X-Client-Cert-Fingerprint\r\n"+
				"\r\n")
			if res.status != http.StatusOK {
				t.Fatalf("status %d, want 200", res.status)
			}
			fp := ""
			if tt.fp != nil {
				fp = fingerprint(tt.fp)
			}
			wantVerifyHeaders(t, up.one(t, path).Header, tt.verify, fp)
		})
	}
}

// TestForwardedLookalikesDropped: headers that differ from the ones
// aopguard sets only by '_' or case (X_Forwarded_For, X-Forwarded_Proto,
// forwarded, ...) never reach the app, over HTTP/1.1 and HTTP/2: an app
// that reads headers CGI-style would take them for the real ones.
func TestForwardedLookalikesDropped(t *testing.T) {
	pki, h, up := headerHarness(t)
	forged := http.Header{
		"X_Forwarded_For":   {"6.6.6.6"},
		"X-Forwarded_Proto": {"http"},
		"X_forwarded_host":  {"evil.example"},
		"X-FORWARDED-FOR":   {"6.6.6.6"},
		"X_Real_Ip":         {"6.6.6.6"},
		"Forwarded":         {"for=6.6.6.6"},
		"forwarded":         {"for=6.6.6.6"},
	}
	for _, proto := range protocols {
		t.Run(proto.name, func(t *testing.T) {
			c, _ := h.client(t, clientOpts{sni: "log.example.com", cert: pki.clientA, h2: proto.h2})
			path := "/lookalikes/" + proto.name
			if res := get(t, c, "GET", "https://log.example.com"+path, "", forged); res.status != http.StatusOK {
				t.Fatalf("status %d, want 200", res.status)
			}
			for k, v := range up.one(t, path).Header {
				for _, ours := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Real-Ip", "Forwarded"} {
					if foldEqual(k, ours) && (k != ours || slices.ContainsFunc(v, func(s string) bool {
						return s == "http" || s == "evil.example" || s == "for=6.6.6.6" || s == "6.6.6.6"
					})) {
						t.Errorf("app received the client's %s: %q", k, v)
					}
				}
			}
		})
	}
}
