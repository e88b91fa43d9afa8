package proxy

import (
	"bufio"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"testing"

	"github.com/aopguard/aopguard/internal/testpki"
	"github.com/aopguard/aopguard/tlsconfig"
)

type recheckEnv struct {
	pki                 *testPKI
	h                   *harness
	uz, ua, ub, ulb, us *upstream
	zoneMode            tlsconfig.Mode
	all                 []*upstream
	connA, connZone     clientOpts
}

// newRecheckEnv: a.example.com (CA A, require), b.example.com (CA B,
// require), lb.example.com (CA B, log-only), s.example.com (CA A, require,
// so the same certificates as a), and the zone (Cloudflare-like CA) in
// zoneMode, each with its own upstream.
func newRecheckEnv(t *testing.T, zoneMode tlsconfig.Mode) *recheckEnv {
	t.Helper()
	e := &recheckEnv{pki: newPKI(t), zoneMode: zoneMode}
	e.uz = newUpstream(t, "zone", nil)
	e.ua = newUpstream(t, "a", nil)
	e.ub = newUpstream(t, "b", nil)
	e.ulb = newUpstream(t, "lb", nil)
	e.us = newUpstream(t, "s", nil)
	e.all = []*upstream{e.uz, e.ua, e.ub, e.ulb, e.us}
	e.h = newHarness(t, e.pki, harnessConfig{
		zone: tlsconfig.PolicySpec{Mode: zoneMode, CAs: cas(e.pki.zoneCA), Upstream: e.uz.url},
		hosts: []tlsconfig.PolicySpec{
			{Name: "a.example.com", Mode: tlsconfig.Require, CAs: cas(e.pki.caA), Upstream: e.ua.url},
			{Name: "b.example.com", Mode: tlsconfig.Require, CAs: cas(e.pki.caB), Upstream: e.ub.url},
			{Name: "lb.example.com", Mode: tlsconfig.LogOnly, CAs: cas(e.pki.caB), Upstream: e.ulb.url},
			{Name: "s.example.com", Mode: tlsconfig.Require, CAs: cas(e.pki.caA), Upstream: e.us.url},
		},
	})
	e.connA = clientOpts{sni: "a.example.com", cert: e.pki.clientA}
	e.connZone = clientOpts{sni: "origin.example.net", cert: e.pki.clientZone}
	return e
}

// onlyTo checks that of all upstreams only want (nil: none) received the
// request for path.
func (e *recheckEnv) onlyTo(t *testing.T, path string, want *upstream) {
	t.Helper()
	for _, u := range e.all {
		n := len(u.got(path))
		switch {
		case u == want && n != 1:
			t.Errorf("upstream %s received %d requests for %s, want 1", u.name, n, path)
		case u != want && n != 0:
			t.Errorf("upstream %s received %d requests for %s, want none", u.name, n, path)
		}
	}
}

func TestHostRecheck(t *testing.T) {
	for _, zoneMode := range []tlsconfig.Mode{tlsconfig.Require, tlsconfig.LogOnly} {
		t.Run("zone "+zoneMode.String(), func(t *testing.T) {
			e := newRecheckEnv(t, zoneMode)
			pki := e.pki
			zoneUnknown := e.uz // what a host-A certificate gets at the zone
			zoneStatus, zoneCount := http.StatusOK, "_zone|log-only|failed|would_reject"
			if zoneMode == tlsconfig.Require {
				zoneUnknown, zoneStatus, zoneCount = nil, http.StatusMisdirectedRequest, "_zone|require|failed|reject"
			}
			type tc struct {
				name   string
				conn   string // "a": SNI a + cert A; "zone": no configured SNI + the edge's cert
				host   string
				status int
				to     *upstream // nil: nobody
				verify string
				fp     *testpki.Cert
				count  string // verification counter the re-check increments; "" for none
			}
			tests := []tc{
				{name: "other host", conn: "a", host: "b.example.com", status: 421, count: "b.example.com|require|failed|reject"},
				{name: "own host", conn: "a", host: "a.example.com", status: 200, to: e.ua, verify: "SUCCESS", fp: pki.clientA},
				{name: "own host with port", conn: "a", host: "a.example.com:8443", status: 200, to: e.ua, verify: "SUCCESS", fp: pki.clientA},
				{name: "own host mixed case", conn: "a", host: "A.Example.COM", status: 200, to: e.ua, verify: "SUCCESS", fp: pki.clientA},
				{name: "own host trailing dot", conn: "a", host: "a.example.com.", status: 200, to: e.ua, verify: "SUCCESS", fp: pki.clientA},
				{name: "other host mixed case with port", conn: "a", host: "B.EXAMPLE.COM:443", status: 421, count: "b.example.com|require|failed|reject"},
				{name: "unknown host", conn: "a", host: "unknown.example.org", status: zoneStatus, to: zoneUnknown, verify: "FAILED:untrusted", fp: pki.clientA, count: zoneCount},
				{name: "IPv4 host", conn: "a", host: "127.0.0.1", status: zoneStatus, to: zoneUnknown, verify: "FAILED:untrusted", fp: pki.clientA, count: zoneCount},
				{name: "IPv6 host", conn: "a", host: "[::1]:8443", status: zoneStatus, to: zoneUnknown, verify: "FAILED:untrusted", fp: pki.clientA, count: zoneCount},
				{name: "log-only host", conn: "a", host: "lb.example.com", status: 200, to: e.ulb, verify: "FAILED:untrusted", fp: pki.clientA, count: "lb.example.com|log-only|failed|would_reject"},
				{name: "host trusting the same CA", conn: "a", host: "s.example.com", status: 200, to: e.us, verify: "SUCCESS", fp: pki.clientA, count: "s.example.com|require|success|allow"},
				{name: "back to own host", conn: "a", host: "a.example.com", status: 200, to: e.ua, verify: "SUCCESS", fp: pki.clientA},
				// The edge's certificate, valid for the zone, does not
				// open a host with its own CA.
				{name: "edge to customer-CA host", conn: "zone", host: "a.example.com", status: 421, count: "a.example.com|require|failed|reject"},
				// ...and is named for what it is on a log-only host.
				{name: "edge to log-only host", conn: "zone", host: "lb.example.com", status: 200, to: e.ulb, verify: "FAILED:zone_cert_on_host", fp: pki.clientZone, count: "lb.example.com|log-only|failed|would_reject"},
				{name: "edge to zone", conn: "zone", host: "www.example.org", status: 200, to: e.uz, verify: "SUCCESS", fp: pki.clientZone},
			}
			wantCounts := map[string]int64{
				"a.example.com|require|success|allow":           1, // handshake of conn a
				"_zone|" + zoneMode.String() + "|success|allow": 1, // handshake of conn zone
			}
			conns := map[string]clientOpts{"a": e.connA, "zone": e.connZone}
			clients := map[string]*http.Client{}
			var dials []func() int32
			for k, o := range conns {
				c, d := e.h.client(t, o)
				clients[k] = c
				dials = append(dials, d.Load)
			}
			for i, tt := range tests {
				path := fmt.Sprintf("/recheck/%d", i)
				if tt.count != "" {
					wantCounts[tt.count]++
				}
				res := get(t, clients[tt.conn], "GET", "https://"+conns[tt.conn].sni+path, tt.host, nil)
				if res.status != tt.status {
					t.Errorf("%s: Host %s: status %d %q, want %d", tt.name, tt.host, res.status, res.body, tt.status)
				}
				e.onlyTo(t, path, tt.to)
				if tt.to == nil {
					if !strings.Contains(res.body, "421") {
						t.Errorf("%s: body %q, want the proxy's 421", tt.name, res.body)
					}
					continue
				}
				if want := "upstream " + tt.to.name + "\n"; res.body != want {
					t.Errorf("%s: body %q, want %q", tt.name, res.body, want)
				}
				if got := tt.to.got(path); len(got) == 1 {
					s := got[0]
					wantVerifyHeaders(t, s.Header, tt.verify, fingerprint(tt.fp))
					if s.Host != tt.host {
						t.Errorf("%s: upstream Host %q, want %q", tt.name, s.Host, tt.host)
					}
				}
			}
			// Every request rode the connection its client opened first:
			// the 421s are answers on the same connection, not refusals
			// of new ones.
			for _, d := range dials {
				if n := d(); n != 1 {
					t.Errorf("client opened %d connections, want 1", n)
				}
			}
			// Wait for the last access line: counters are incremented
			// before it is written.
			e.h.log.access(t, fmt.Sprintf("/recheck/%d", len(tests)-1))
			if got := e.h.verifies.nonzero(); !maps.Equal(got, wantCounts) {
				t.Errorf("verification counters\n got %v\nwant %v", got, wantCounts)
			}
		})
	}
}

// TestHostRecheckSameConnection is the CVE-2018-21246 shape over one
// hand-driven connection: authenticate for a, ask for b, then for a.
func TestHostRecheckSameConnection(t *testing.T) {
	e := newRecheckEnv(t, tlsconfig.Require)
	c := e.h.dial(t, e.connA, "http/1.1")
	br := bufio.NewReader(c)
	steps := []struct {
		host   string
		status int
		to     *upstream
	}{
		{"b.example.com", 421, nil},
		{"a.example.com", 200, e.ua},
		{"b.example.com:443", 421, nil},
		{"a.example.com", 200, e.ua},
	}
	for i, s := range steps {
		path := fmt.Sprintf("/same/%d", i)
		res := rawRoundTrip(t, c, br, "GET "+path+" HTTP/1.1\r\nHost: "+s.host+"\r\n\r\n")
		if res.status != s.status {
			t.Errorf("Host %s: status %d, want %d", s.host, res.status, s.status)
		}
		e.onlyTo(t, path, s.to)
	}
	if n := e.ub.hits(); n != 0 {
		t.Errorf("b's upstream received %d requests, want none", n)
	}
}

func TestHostRecheckHTTP2(t *testing.T) {
	e := newRecheckEnv(t, tlsconfig.Require)
	c, dials := e.h.client(t, clientOpts{sni: e.connA.sni, cert: e.connA.cert, h2: true})
	steps := []struct {
		authority string
		status    int
		to        *upstream
	}{
		{"a.example.com", 200, e.ua},
		{"b.example.com", 421, nil},
		{"a.example.com:8443", 200, e.ua},
		{"unknown.example.org", 421, nil},
		{"s.example.com", 200, e.us},
		{"lb.example.com", 200, e.ulb},
	}
	var remote any
	for i, s := range steps {
		path := fmt.Sprintf("/h2/%d", i)
		res := get(t, c, "GET", "https://a.example.com"+path, s.authority, nil)
		if res.proto != 2 {
			t.Fatalf("response over HTTP/%d, want HTTP/2", res.proto)
		}
		if res.status != s.status {
			t.Errorf(":authority %s: status %d, want %d", s.authority, res.status, s.status)
		}
		e.onlyTo(t, path, s.to)
		line := e.h.log.access(t, path)
		if line["proto"] != "HTTP/2.0" {
			t.Errorf("access line proto %v, want HTTP/2.0", line["proto"])
		}
		if i == 0 {
			remote = line["remote"]
		} else if line["remote"] != remote {
			t.Errorf("request %d came from %v, the first from %v: want one connection", i, line["remote"], remote)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("client opened %d connections, want 1", n)
	}
	if n := e.ub.hits(); n != 0 {
		t.Errorf("b's upstream received %d requests, want none", n)
	}
}
