package proxy

import (
	"net/http"
	"net/netip"
	"testing"

	"github.com/aopguard/aopguard/cfips"
	"github.com/aopguard/aopguard/tlsconfig"
)

// TestStrictHostHeader: under strict_hosts a Host that matches no
// configured host gets 421, whatever the connection's certificate.
func TestStrictHostHeader(t *testing.T) {
	pki := newPKI(t)
	up := newUpstream(t, "app", nil)
	h := newHarness(t, pki, harnessConfig{
		strict: true,
		zone:   tlsconfig.PolicySpec{Mode: tlsconfig.LogOnly, CAs: cas(pki.zoneCA), Upstream: up.url},
		hosts:  []tlsconfig.PolicySpec{{Name: "a.example.com", Mode: tlsconfig.LogOnly, CAs: cas(pki.zoneCA), Upstream: up.url}},
	})
	c, _ := h.client(t, clientOpts{sni: "a.example.com", cert: pki.clientZone})
	for _, tt := range []struct {
		host   string
		status int
	}{
		{"a.example.com", 200},
		{"A.example.com:443", 200},
		{"unknown.example.com", http.StatusMisdirectedRequest},
		{"127.0.0.1", http.StatusMisdirectedRequest},
	} {
		before := up.hits()
		res := get(t, c, "GET", "https://"+h.addr+"/strict", tt.host, nil)
		if res.status != tt.status {
			t.Errorf("Host %s: status %d, want %d", tt.host, res.status, tt.status)
		}
		if tt.status != 200 && up.hits() != before {
			t.Errorf("Host %s reached the upstream", tt.host)
		}
	}
}

// TestVisitorIP: with trust_cloudflare_headers the app gets the visitor
// address from CF-Connecting-IP only for verified connections (and, with
// require_cloudflare_source, only from Cloudflare's ranges); every other
// request loses CF-* and True-Client-IP. A client's own X-Forwarded-For
// and X-Real-IP never reach the app.
func TestVisitorIP(t *testing.T) {
	pki := newPKI(t)
	forged := http.Header{
		"Cf-Connecting-Ip": {"203.0.113.50"},
		"True-Client-Ip":   {"203.0.113.51"},
		"Cf-Ipcountry":     {"XX"},
		"Cf_Visitor":       {`{"scheme":"https"}`},
		"X-Forwarded-For":  {"198.51.100.1"},
		"X-Real-Ip":        {"198.51.100.2"},
	}
	loopbackIsCloudflare := func(netip.Addr) string { return cfips.Cloudflare }
	tests := []struct {
		name          string
		trust, source bool
		classify      func(netip.Addr) string
		cert          bool
		wantXFF       string // "" means the connecting address
		wantRealIP    string
		wantCF        bool // CF-* and True-Client-IP forwarded
	}{
		{"trust off passes CF headers, owns X-Real-IP", false, false, nil, true, "", "", true},
		{"trusted: verified", true, false, nil, true, "203.0.113.50", "203.0.113.50", true},
		{"untrusted: no certificate", true, false, nil, false, "", "", false},
		{"untrusted: not from Cloudflare", true, true, nil, true, "", "", false},
		{"trusted: verified and from Cloudflare", true, true, loopbackIsCloudflare, true, "203.0.113.50", "203.0.113.50", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, "app", nil)
			h := newHarness(t, pki, harnessConfig{
				trustCF: tt.trust, requireSource: tt.source, source: tt.classify,
				zone: tlsconfig.PolicySpec{Mode: tlsconfig.LogOnly, CAs: cas(pki.zoneCA), Upstream: up.url},
			})
			o := clientOpts{sni: "app.example.com"}
			if tt.cert {
				o.cert = pki.clientZone
			}
			c, _ := h.client(t, o)
			if res := get(t, c, "GET", "https://"+h.addr+"/visitor", "app.example.com", forged.Clone()); res.status != 200 {
				t.Fatalf("status %d", res.status)
			}
			got := up.one(t, "/visitor").Header
			wantXFF := tt.wantXFF
			if wantXFF == "" {
				wantXFF = "127.0.0.1"
			}
			if xff := got.Values("X-Forwarded-For"); len(xff) != 1 || xff[0] != wantXFF {
				t.Errorf("X-Forwarded-For %q, want %q", xff, wantXFF)
			}
			if rip := got.Get("X-Real-Ip"); rip != tt.wantRealIP {
				t.Errorf("X-Real-IP %q, want %q", rip, tt.wantRealIP)
			}
			for _, k := range []string{"Cf-Connecting-Ip", "True-Client-Ip", "Cf-Ipcountry", "Cf_visitor"} {
				if _, ok := got[http.CanonicalHeaderKey(k)]; ok != tt.wantCF {
					t.Errorf("%s forwarded = %v, want %v", k, ok, tt.wantCF)
				}
			}
		})
	}
}

// TestVisitorIPRejectsGarbage: a CF-Connecting-IP that is not an address
// sets nothing, even on a trusted connection.
func TestVisitorIPRejectsGarbage(t *testing.T) {
	pki := newPKI(t)
	up := newUpstream(t, "app", nil)
	h := newHarness(t, pki, harnessConfig{trustCF: true,
		zone: tlsconfig.PolicySpec{Mode: tlsconfig.LogOnly, CAs: cas(pki.zoneCA), Upstream: up.url}})
	c, _ := h.client(t, clientOpts{sni: "app.example.com", cert: pki.clientZone})
	get(t, c, "GET", "https://"+h.addr+"/garbage", "app.example.com", http.Header{"Cf-Connecting-Ip": {"1.2.3.4, 5.6.7.8"}})
	got := up.one(t, "/garbage").Header
	if got.Get("X-Real-Ip") != "" || got.Get("X-Forwarded-For") != "127.0.0.1" {
		t.Errorf("X-Real-IP %q, X-Forwarded-For %q", got.Get("X-Real-Ip"), got.Get("X-Forwarded-For"))
	}
}
