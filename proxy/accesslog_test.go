package proxy

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aopguard/aopguard/internal/testpki"
	"github.com/aopguard/aopguard/tlsconfig"
	"github.com/rs/zerolog"
)

func TestAccessLog(t *testing.T) {
	pki := newPKI(t)
	up := newUpstream(t, "app", nil)
	h := newHarness(t, pki, harnessConfig{
		zone: tlsconfig.PolicySpec{Mode: tlsconfig.Off, Upstream: up.url},
		hosts: []tlsconfig.PolicySpec{
			{Name: "log.example.com", Mode: tlsconfig.LogOnly, CAs: cas(pki.caA), Upstream: up.url},
			{Name: "req.example.com", Mode: tlsconfig.Require, CAs: cas(pki.caB), Upstream: up.url},
			{Name: "off.example.com", Mode: tlsconfig.Off, Upstream: up.url},
		},
	})
	const ray = "8f1e2d3c4b5a6978-LHR"
	tests := []struct {
		name   string
		sni    string
		host   string // "" for the SNI
		cert   *testpki.Cert
		method string
		query  string
		cfRay  string
		want   map[string]any // fields and their values
		absent []string       // fields that must not appear
		class  string         // request counter class
	}{
		{
			name: "log-only valid", sni: "log.example.com", cert: pki.clientA, method: "GET", cfRay: ray,
			want: map[string]any{"policy": "log.example.com", "status": 200, "verify": "success", "action": "allow",
				"fingerprint": fingerprint(pki.clientA), "serial": pki.clientA.Cert.SerialNumber.Text(16), "cf_ray": ray},
			absent: []string{"reason", "upstream_error"}, class: "2xx",
		},
		{
			name: "log-only untrusted", sni: "log.example.com", cert: pki.clientX, method: "GET",
			want: map[string]any{"policy": "log.example.com", "status": 200, "verify": "failed", "action": "would_reject",
				"reason": "untrusted", "fingerprint": fingerprint(pki.clientX), "serial": pki.clientX.Cert.SerialNumber.Text(16)},
			absent: []string{"cf_ray"}, class: "2xx",
		},
		{
			name: "log-only no cert", sni: "log.example.com", method: "GET",
			want:   map[string]any{"policy": "log.example.com", "status": 200, "verify": "none", "action": "would_reject", "reason": "missing"},
			absent: []string{"fingerprint", "serial", "cf_ray"}, class: "2xx",
		},
		{
			name: "off", sni: "off.example.com", method: "GET",
			want:   map[string]any{"policy": "off.example.com", "status": 200, "verify": "none", "action": "allow"},
			absent: []string{"reason", "fingerprint", "serial", "cf_ray"}, class: "2xx",
		},
		{
			name: "POST with port and upstream status", sni: "log.example.com", host: "log.example.com:8443", cert: pki.clientA,
			method: "POST", query: "?status=201",
			want:  map[string]any{"policy": "log.example.com", "status": 201, "verify": "success", "action": "allow"},
			class: "2xx",
		},
		{
			name: "upstream 503", sni: "off.example.com", method: "GET", query: "?status=503", cfRay: ray,
			want:  map[string]any{"policy": "off.example.com", "status": 503, "cf_ray": ray},
			class: "5xx",
		},
		{
			name: "misdirected", sni: "log.example.com", host: "req.example.com", cert: pki.clientA, method: "GET",
			want: map[string]any{"policy": "req.example.com", "status": 421, "verify": "failed", "action": "reject",
				"reason": "untrusted", "fingerprint": fingerprint(pki.clientA)},
			class: "4xx",
		},
	}
	wantCounts := map[string]int64{}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := tt.host
			if host == "" {
				host = tt.sni
			}
			wantCounts[tt.want["policy"].(string)+"|"+tt.class]++
			c, _ := h.client(t, clientOpts{sni: tt.sni, cert: tt.cert})
			path := fmt.Sprintf("/log/%d", i)
			hdr := http.Header{}
			if tt.cfRay != "" {
				hdr.Set("CF-Ray", tt.cfRay)
			}
			res := get(t, c, tt.method, "https://"+tt.sni+path+tt.query, host, hdr)
			if res.status != tt.want["status"] {
				t.Fatalf("status %d, want %v", res.status, tt.want["status"])
			}
			line := h.log.access(t, path)
			want := map[string]any{
				"level": "info", "host": host, "sni": tt.sni, "resumed": false, "method": tt.method,
				"path": path, "proto": "HTTP/1.1", "bytes": len(res.body),
			}
			maps.Copy(want, tt.want)
			for k, v := range want {
				if n, ok := v.(int); ok {
					v = float64(n) // JSON numbers
				}
				if line[k] != v {
					t.Errorf("field %s = %#v, want %#v", k, line[k], v)
				}
			}
			for _, k := range tt.absent {
				if v, ok := line[k]; ok {
					t.Errorf("field %s = %#v, want it absent", k, v)
				}
			}
			if d, ok := line["duration"].(float64); !ok || d < 0 {
				t.Errorf("duration %#v, want a number", line["duration"])
			}
			if r, _ := line["remote"].(string); !strings.HasPrefix(r, "127.0.0.1:") {
				t.Errorf("remote %q, want the client's address", r)
			}
		})
	}
	got := h.requests.nonzero()
	maps.DeleteFunc(got, func(k string, _ int64) bool {
		return strings.HasPrefix(k, "duration|") || strings.HasPrefix(k, "upstream|")
	})
	if !maps.Equal(got, wantCounts) {
		t.Errorf("request counters\n got %v\nwant %v", got, wantCounts)
	}
}

// TestAccessLogResumed: a resumed TLS session is marked in the access line
// and keeps the certificate (and so the verdict) of the original handshake.
func TestAccessLogResumed(t *testing.T) {
	pki := newPKI(t)
	up := newUpstream(t, "app", nil)
	h := newHarness(t, pki, harnessConfig{
		zone: tlsconfig.PolicySpec{Mode: tlsconfig.LogOnly, CAs: cas(pki.zoneCA), Upstream: up.url},
	})
	o := clientOpts{sni: "www.example.org", cert: pki.clientZone, sessions: tls.NewLRUClientSessionCache(4)}
	for i, wantResumed := range []bool{false, true} {
		c := h.dial(t, o, "http/1.1")
		if got := c.ConnectionState().DidResume; got != wantResumed {
			t.Fatalf("connection %d: DidResume %v, want %v", i, got, wantResumed)
		}
		path := fmt.Sprintf("/resume/%d", i)
		// Reading the response also reads the TLS 1.3 session ticket.
		res := rawRoundTrip(t, c, bufio.NewReader(c), "GET "+path+" HTTP/1.1\r\nHost: www.example.org\r\n\r\n")
		if res.status != http.StatusOK {
			t.Fatalf("status %d", res.status)
		}
		c.Close()
		line := h.log.access(t, path)
		if line["resumed"] != wantResumed || line["verify"] != "success" || line["fingerprint"] != fingerprint(pki.clientZone) {
			t.Errorf("connection %d: resumed %v verify %v fingerprint %v, want %v success %s",
				i, line["resumed"], line["verify"], line["fingerprint"], wantResumed, fingerprint(pki.clientZone))
		}
		wantVerifyHeaders(t, up.one(t, path).Header, "SUCCESS", fingerprint(pki.clientZone))
	}
}

// TestLineCache: access lines whose shared fields come from the cache
// carry the fields of their own policy, verdict and handshake, whichever
// lines came before them in the same slot.
func TestLineCache(t *testing.T) {
	pki := newPKI(t)
	k, err := tlsconfig.NewTicketKeys()
	if err != nil {
		t.Fatal(err)
	}
	set, err := tlsconfig.NewSet(tlsconfig.PolicySpec{Mode: tlsconfig.LogOnly, CAs: cas(pki.zoneCA)},
		[]tlsconfig.PolicySpec{{Name: "req.example.com", Mode: tlsconfig.Require, CAs: cas(pki.caB)}},
		tlsconfig.Options{Tickets: k})
	if err != nil {
		t.Fatal(err)
	}
	zone, _ := set.Lookup("other.example")
	req, _ := set.Lookup("req.example.com")
	good, bad := zone.Verify(cas(pki.clientZone)), zone.Verify(cas(pki.clientX))
	keys := map[string]lineKey{
		"zone good":         {p: zone, v: good, sni: "a.example", source: "cloudflare"},
		"zone bad":          {p: zone, v: bad, sni: "a.example", source: "other"},
		"zone good resumed": {p: zone, v: good, sni: "b.example", resumed: true, source: "cloudflare"},
		"req good":          {p: req, v: req.Verify(cas(pki.clientB)), sni: "req.example.com", source: "cloudflare"},
	}
	var buf strings.Builder
	h := NewHandler(nil, zerolog.New(&buf), HandlerOptions{})
	for i, name := range []string{"zone good", "zone bad", "zone good", "zone good", "zone good resumed", "req good", "zone bad"} {
		k := keys[name]
		buf.Reset()
		ci := &tlsconfig.ConnInfo{SNI: k.sni, Resumed: k.resumed, Source: k.source}
		r := httptest.NewRequest("GET", "/x", nil)
		h.logAccess(r, k.p, ci, k.v, 200, &recorder{}, time.Millisecond, "", false, false)
		var line map[string]any
		if err := json.Unmarshal([]byte(buf.String()), &line); err != nil {
			t.Fatalf("line %d: %v: %s", i, err, buf.String())
		}
		want := map[string]any{"policy": k.p.Name(), "sni": k.sni, "resumed": k.resumed, "source": k.source,
			"verify": k.v.Result.String(), "action": k.p.ActionFor(k.v).String(), "fingerprint": k.v.Fingerprint}
		if k.v.Reason != "" {
			want["reason"] = k.v.Reason
		}
		for f, v := range want {
			if line[f] != v {
				t.Errorf("line %d (%s): %s = %v, want %v", i, name, f, line[f], v)
			}
		}
		if _, ok := line["reason"]; ok && k.v.Reason == "" {
			t.Errorf("line %d (%s): a reason (%v) on a line without one", i, name, line["reason"])
		}
	}
}
