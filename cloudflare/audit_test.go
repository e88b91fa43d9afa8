package cloudflare

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/aopguard/aopguard/certs"
	"github.com/aopguard/aopguard/internal/testpki"
	"github.com/aopguard/aopguard/tlsconfig"
)

// world is the local side of the audit tests: a zone CA, a customer CA
// for host policies, a CA nobody trusts, and leaves of each.
type world struct {
	zoneCA, hostCA, rogueCA       *testpki.Cert
	zoneLeaf, hostLeaf, rogueLeaf *testpki.Cert
}

func newWorld(t *testing.T) *world {
	w := &world{zoneCA: testpki.CA(t, "zone AOP CA"), hostCA: testpki.CA(t, "host AOP CA"), rogueCA: testpki.CA(t, "rogue CA")}
	w.zoneLeaf = testpki.Client(t, w.zoneCA, "zone leaf")
	w.hostLeaf = testpki.Client(t, w.hostCA, "host leaf")
	w.rogueLeaf = testpki.Client(t, w.rogueCA, "rogue leaf")
	return w
}

// policies builds the local policies the audit tests judge against: the
// zone (require, zone CA and Cloudflare's CA), app (require), staged
// (log-only), open (off) and *.wild.example.com (require), the hosts
// trusting the customer CA.
func (w *world) policies(t *testing.T) *tlsconfig.Set {
	t.Helper()
	keys, err := tlsconfig.NewTicketKeys()
	if err != nil {
		t.Fatal(err)
	}
	hostCAs := []*x509.Certificate{w.hostCA.Cert}
	set, err := tlsconfig.NewSet(
		tlsconfig.PolicySpec{Mode: tlsconfig.Require, CAs: []*x509.Certificate{w.zoneCA.Cert, certs.CloudflareOriginPullCA()}},
		[]tlsconfig.PolicySpec{
			{Name: "app.example.com", Mode: tlsconfig.Require, CAs: hostCAs},
			{Name: "staged.example.com", Mode: tlsconfig.LogOnly, CAs: hostCAs},
			{Name: "open.example.com", Mode: tlsconfig.Off},
			{Name: "*.wild.example.com", Mode: tlsconfig.Require, CAs: hostCAs},
		}, tlsconfig.Options{Tickets: keys})
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func link(c *testpki.Cert, enabled bool) Hostname {
	return Hostname{CertID: "c-" + c.Cert.Subject.CommonName, Enabled: enabled, Status: "active",
		Cert: newCert("c-"+c.Cert.Subject.CommonName, "active", string(c.CertPEM()), time.Time{}, time.Time{})}
}

func rowFor(t *testing.T, rep Report, host string) Row {
	t.Helper()
	for _, r := range rep.Rows {
		if r.Hostname == host {
			return r
		}
	}
	t.Fatalf("no row for %s in %+v", host, rep.Rows)
	return Row{}
}

func TestAuditVerdictsAndPrecedence(t *testing.T) {
	w := newWorld(t)
	set := w.policies(t)
	zoneCert := newCert("zc", "active", string(w.zoneLeaf.CertPEM()), time.Time{}, time.Time{})
	cases := []struct {
		name    string
		state   State
		host    string
		level   Level
		verdict string
		reason  string
	}{
		{"per-hostname trusted", State{Hostnames: map[string]Hostname{"app.example.com": link(w.hostLeaf, true)}},
			"app.example.com", LevelHostname, OK, ""},
		{"per-hostname untrusted under require", State{Hostnames: map[string]Hostname{"app.example.com": link(w.rogueLeaf, true)}},
			"app.example.com", LevelHostname, WillBreak, tlsconfig.ReasonUntrusted},
		{"per-hostname untrusted under log-only", State{Hostnames: map[string]Hostname{"staged.example.com": link(w.rogueLeaf, true)}},
			"staged.example.com", LevelHostname, WouldBreak, tlsconfig.ReasonUntrusted},
		{"nothing presented under require", State{}, "app.example.com", LevelNone, WillBreak, ""},
		{"nothing presented under log-only", State{}, "staged.example.com", LevelNone, WouldBreak, ""},
		{"nothing presented to an off policy", State{}, "open.example.com", LevelNone, OK, ""},
		{"presented to an off policy", State{Hostnames: map[string]Hostname{"open.example.com": link(w.hostLeaf, true)}},
			"open.example.com", LevelHostname, Unprotected, ""},
		{"global to an off policy", State{Global: true}, "open.example.com", LevelGlobal, Unprotected, ""},
		{"per-hostname beats zone-level and global",
			State{Global: true, ZoneLevel: true, ZoneCerts: []Cert{zoneCert}, Hostnames: map[string]Hostname{"app.example.com": link(w.hostLeaf, true)}},
			"app.example.com", LevelHostname, OK, ""},
		{"zone-level beats global", State{Global: true, ZoneLevel: true, ZoneCerts: []Cert{zoneCert}},
			"app.example.com", LevelZone, WillBreak, tlsconfig.ReasonZoneCertOnHost},
		{"zone-level certificate uploaded but not enabled: global", State{Global: true, ZoneCerts: []Cert{zoneCert}},
			"*", LevelGlobal, OK, ""},
		{"zone-level on the zone policy", State{ZoneLevel: true, ZoneCerts: []Cert{zoneCert}}, "*", LevelZone, OK, ""},
		{"global alone on a host with its own CA", State{Global: true}, "app.example.com", LevelGlobal, WillBreak, tlsconfig.ReasonUntrusted},
		{"a disabled link sends nothing, whatever zone-level and global say",
			State{Global: true, ZoneLevel: true, ZoneCerts: []Cert{zoneCert}, Hostnames: map[string]Hostname{"app.example.com": link(w.hostLeaf, false)}},
			"app.example.com", LevelNone, WillBreak, ""},
		{"a disabled link on a name the config does not name",
			State{Global: true, Hostnames: map[string]Hostname{"legacy.example.com": link(w.zoneLeaf, false)}},
			"legacy.example.com", LevelNone, WillBreak, ""},
		{"wildcard host: a proxied name it serves", State{Proxied: []string{"a.wild.example.com"},
			Hostnames: map[string]Hostname{"a.wild.example.com": link(w.hostLeaf, true)}},
			"a.wild.example.com", LevelHostname, OK, ""},
		{"wildcard host: a name it serves with nothing presented", State{Proxied: []string{"b.wild.example.com"}},
			"b.wild.example.com", LevelNone, WillBreak, ""},
		{"wildcard matches one label only: deeper names are the zone's",
			State{Hostnames: map[string]Hostname{"x.a.wild.example.com": link(w.hostLeaf, true)}},
			"x.a.wild.example.com", LevelHostname, WillBreak, tlsconfig.ReasonUntrusted},
		{"unnamed hostname with per-hostname AOP falls to the zone policy",
			State{Hostnames: map[string]Hostname{"legacy.example.com": link(w.zoneLeaf, true)}},
			"legacy.example.com", LevelHostname, OK, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.state
			if st.Hostnames == nil {
				st.Hostnames = map[string]Hostname{}
			}
			rep := Audit(&st, set, time.Now())
			r := rowFor(t, rep, tc.host)
			if r.Level != tc.level || r.Verdict != tc.verdict || r.TrustReason != tc.reason {
				t.Errorf("row %+v: want level %s, verdict %s, reason %q", r, tc.level, tc.verdict, tc.reason)
			}
			if r.Verdict == WillBreak && !rep.Breaks() {
				t.Errorf("Breaks() is false with a will_break row")
			}
		})
	}
}

func TestAuditWildcardAndUnnamedRows(t *testing.T) {
	w := newWorld(t)
	set := w.policies(t)
	st := &State{Hostnames: map[string]Hostname{
		"a.wild.example.com":   link(w.hostLeaf, true),
		"legacy.example.com":   link(w.zoneLeaf, true),
		"x.a.wild.example.com": link(w.hostLeaf, true),
	}, Proxied: []string{"plain.example.com"}}
	rep := Audit(st, set, time.Now())
	if r := rowFor(t, rep, "a.wild.example.com"); r.Policy != "*.wild.example.com" || r.Unnamed {
		t.Errorf("a.wild.example.com: %+v, want the wildcard's policy, named", r)
	}
	for _, h := range []string{"legacy.example.com", "x.a.wild.example.com"} {
		if r := rowFor(t, rep, h); r.Policy != tlsconfig.ZoneName || !r.Unnamed {
			t.Errorf("%s: %+v, want the zone policy, unnamed", h, r)
		}
	}
	for _, r := range rep.Rows {
		if r.Hostname == "plain.example.com" {
			t.Errorf("a proxied name without per-hostname AOP that the zone serves got a row of its own: %+v", r)
		}
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "legacy.example.com (not in config)") {
		t.Errorf("table does not flag the unnamed hostname:\n%s", table.String())
	}
}

func TestAuditExpiryThresholds(t *testing.T) {
	w := newWorld(t)
	set := w.policies(t)
	now := time.Now()
	cases := []struct {
		name     string
		notAfter time.Time
		expiry   string
		verdict  string
	}{
		{"40 days", now.Add(40 * 24 * time.Hour), ExpiryOK, OK},
		{"31 days", now.Add(31*24*time.Hour + time.Hour), ExpiryOK, OK},
		{"29 days", now.Add(29*24*time.Hour + time.Hour), ExpiryWarn30, OK},
		{"14 days", now.Add(14*24*time.Hour + time.Hour), ExpiryWarn30, OK},
		{"13 days", now.Add(13*24*time.Hour + time.Hour), ExpiryWarn14, OK},
		{"expired", now.Add(-time.Hour), ExpiryExpired, WillBreak},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			leaf := testpki.New(t, w.hostCA, testpki.Options{CN: "leaf " + tc.name, NotBefore: now.Add(-60 * 24 * time.Hour), NotAfter: tc.notAfter})
			st := &State{Hostnames: map[string]Hostname{"app.example.com": link(leaf, true)}}
			rep := Audit(st, set, now)
			r := rowFor(t, rep, "app.example.com")
			if r.Expiry != tc.expiry || r.Verdict != tc.verdict {
				t.Errorf("%+v: want expiry %s, verdict %s", r, tc.expiry, tc.verdict)
			}
			var table bytes.Buffer
			rep.WriteTable(&table)
			switch tc.expiry {
			case ExpiryExpired:
				if !strings.Contains(table.String(), "ERROR app.example.com") {
					t.Errorf("no error line for an expired certificate:\n%s", table.String())
				}
			case ExpiryWarn14, ExpiryWarn30:
				if !strings.Contains(table.String(), "WARNING app.example.com") {
					t.Errorf("no warning line:\n%s", table.String())
				}
			}
		})
	}
}

func TestAuditJSON(t *testing.T) {
	w := newWorld(t)
	rep := Audit(&State{ZoneID: "z", Hostnames: map[string]Hostname{"app.example.com": link(w.hostLeaf, true)}}, w.policies(t), time.Now())
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if r := rowFor(t, back, "app.example.com"); r.Verdict != OK || r.Fingerprint != certs.Fingerprint(w.hostLeaf.Cert.Raw) || r.DaysLeft == nil {
		t.Errorf("JSON row %+v", r)
	}
}
