package rollout

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTestTracker(min uint64) (*Tracker, *clock) {
	c := &clock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	tr := NewTracker(min)
	tr.now = c.now
	return tr, c
}

var (
	cf    = netip.MustParseAddr("173.245.48.7")
	other = netip.MustParseAddr("198.51.100.9")
)

func policy(mode string) []PolicyInfo { return []PolicyInfo{{Name: "app.example.com", Mode: mode}} }

func TestVerdicts(t *testing.T) {
	ok := Event{Policy: "app.example.com", Result: "success", Source: SourceCloudflare, Remote: cf}
	cfBad := func(reason string) Event {
		return Event{Policy: "app.example.com", Result: "failed", Reason: reason, Source: SourceCloudflare, Remote: cf}
	}
	scanner := Event{Policy: "app.example.com", Result: "none", Reason: "missing", Source: SourceOther, Remote: other}
	health := Event{Policy: "app.example.com", Result: "none", Reason: "missing", Source: SourceCloudflare, Remote: cf, HealthCheck: true}
	rep := func(e Event, n int) []Event {
		var out []Event
		for i := 0; i < n; i++ {
			out = append(out, e)
		}
		return out
	}
	cases := []struct {
		name    string
		mode    string
		events  []Event
		verdict string
		why     string
	}{
		{"nothing seen", "log-only", nil, NoTraffic, "0 requests from Cloudflare"},
		{"too little Cloudflare traffic", "log-only", rep(ok, 9), NoTraffic, "9 requests from Cloudflare in the last hour, 10 needed"},
		{"enough, all valid", "log-only", rep(ok, 10), ReadyToEnforce, "all 10 requests"},
		{"scanners do not block readiness", "log-only", append(rep(ok, 10), rep(scanner, 50)...), ReadyToEnforce, ""},
		{"health checks counted apart", "log-only", append(rep(ok, 10), rep(health, 5)...), ReadyToEnforce, ""},
		{"Cloudflare without per-hostname cert", "log-only", append(rep(ok, 10), rep(cfBad("zone_cert_on_host"), 312)...), NotReady,
			"312 requests from Cloudflare without a valid certificate in the last hour (zone_cert_on_host 312): Cloudflare sends the zone certificate"},
		{"untrusted", "log-only", append(rep(ok, 10), cfBad("untrusted")), NotReady, "AOP not enabled for this hostname at Cloudflare"},
		{"require is enforced", "require", rep(ok, 1), Enforced, ""},
		{"off", "off", nil, Off, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr, _ := newTestTracker(10)
			for _, e := range tc.events {
				tr.Record(e)
			}
			r := tr.Report(policy(tc.mode), "test")
			p := r.Policies[0]
			if p.Verdict != tc.verdict || !strings.Contains(p.Why, tc.why) {
				t.Fatalf("verdict %s (%s), want %s containing %q", p.Verdict, p.Why, tc.verdict, tc.why)
			}
		})
	}
}

func TestWindowSlidesAndTotalsStay(t *testing.T) {
	tr, c := newTestTracker(1)
	tr.Record(Event{Policy: "app.example.com", Result: "failed", Reason: "untrusted", Source: SourceCloudflare, Remote: cf})
	if v := tr.Report(policy("log-only"), "").Policies[0].Verdict; v != NotReady {
		t.Fatalf("verdict %s", v)
	}
	c.t = c.t.Add(61 * time.Minute)
	tr.Record(Event{Policy: "app.example.com", Result: "success", Source: SourceCloudflare, Remote: cf})
	p := tr.Report(policy("log-only"), "").Policies[0]
	if p.Verdict != ReadyToEnforce {
		t.Fatalf("after the failure left the window: %s (%s)", p.Verdict, p.Why)
	}
	if p.SinceStart.Total != 2 || p.LastHour.Total != 1 {
		t.Fatalf("since start %d, last hour %d", p.SinceStart.Total, p.LastHour.Total)
	}
}

func TestFailingSourcesBoundedAndRecentFirst(t *testing.T) {
	tr, c := newTestTracker(1)
	for i := 0; i < 30; i++ {
		c.t = c.t.Add(time.Second)
		tr.Record(Event{Policy: "p", Result: "none", Reason: "missing", Source: SourceOther, Remote: netip.MustParseAddr(fmt.Sprintf("198.51.100.%d", i))})
	}
	c.t = c.t.Add(time.Second)
	tr.Record(Event{Policy: "p", Result: "failed", Reason: "untrusted", Source: SourceOther, Remote: netip.MustParseAddr("198.51.100.15")})
	f := tr.Report([]PolicyInfo{{Name: "p", Mode: "log-only"}}, "").Policies[0].FailingSources
	if len(f) != maxFailingSources {
		t.Fatalf("%d failing sources kept, want %d", len(f), maxFailingSources)
	}
	// One address failing for two reasons is two entries whose counts
	// agree with the breakdown by reason (missing 1, untrusted 1).
	if f[0].Address != "198.51.100.15" || f[0].Count != 1 || f[0].Reason != "untrusted" {
		t.Fatalf("most recent first: %+v", f[0])
	}
	if f[1].Address != "198.51.100.29" {
		t.Fatalf("second: %+v", f[1])
	}
	var missing *FailingSource
	for i := range f {
		if f[i].Address == "198.51.100.15" && f[i].Reason == "missing" {
			missing = &f[i]
		}
	}
	if missing == nil || missing.Count != 1 {
		t.Fatalf("the earlier missing failure of 198.51.100.15 is gone or miscounted: %+v", f)
	}
}

func TestResetAndMinRequests(t *testing.T) {
	tr, _ := newTestTracker(1)
	tr.Record(Event{Policy: "app.example.com", Result: "failed", Reason: "untrusted", Source: SourceCloudflare, Remote: cf})
	tr.Reset("app.example.com")
	tr.Record(Event{Policy: "app.example.com", Result: "success", Source: SourceCloudflare, Remote: cf})
	if p := tr.Report(policy("log-only"), "").Policies[0]; p.Verdict != ReadyToEnforce || p.SinceStart.Total != 1 {
		t.Fatalf("after reset: %s, total %d", p.Verdict, p.SinceStart.Total)
	}
	tr.SetMinRequests(2)
	if p := tr.Report(policy("log-only"), "").Policies[0]; p.Verdict != NoTraffic {
		t.Fatalf("with min 2: %s", p.Verdict)
	}
}

func TestUnknownPolicyReportsZeroes(t *testing.T) {
	tr, _ := newTestTracker(5)
	p := tr.Report(policy("log-only"), "").Policies[0]
	if p.SinceStart.Total != 0 || p.Verdict != NoTraffic || p.FailingSources == nil {
		t.Fatalf("%+v", p)
	}
}

func TestPostQuantumVerdicts(t *testing.T) {
	const name = "app.example.com"
	pq := Handshake{Policy: name, Source: SourceCloudflare, MLDSA: true, PostQuantumKeyAgreement: true}
	classical := Handshake{Policy: name, Source: SourceCloudflare, PostQuantumKeyAgreement: true}
	scannerPQ := Handshake{Policy: name, Source: SourceOther}
	ok := Event{Policy: name, Result: "success", Source: SourceCloudflare, Remote: cf}
	cases := []struct {
		name       string
		mode, sigs string
		handshakes []Handshake
		requests   int
		verdict    string
		why        string
		mlShare    float64 // -1: absent
	}{
		{"nothing seen", "log-only", "any", nil, 0, NoTraffic, "no verified handshake from Cloudflare", -1},
		{"all ML-DSA, enough requests", "log-only", "any", []Handshake{pq, pq, pq, pq}, 10, SafeToSwitch, "all 4 verified handshakes", 1},
		{"all ML-DSA under require", "require", "any", []Handshake{pq}, 10, SafeToSwitch, "", 1},
		{"all ML-DSA, too few requests", "log-only", "any", []Handshake{pq}, 3, NoTraffic, "3 requests are too few to judge (10 needed)", 1},
		{"a classical one", "log-only", "any", []Handshake{pq, pq, pq, classical}, 10, NotSafe, "1 of 4 verified handshakes", 0.75},
		{"only other sources classical", "log-only", "any", []Handshake{pq, scannerPQ}, 10, SafeToSwitch, "all 1 verified", 1},
		{"already post-quantum", "log-only", "post-quantum", []Handshake{classical}, 10, PostQuantumOn, "would_reject/classical", 0},
		{"enforced post-quantum", "require", "post-quantum", nil, 0, PostQuantumOn, "refused (reason classical)", -1},
		{"off", "off", "any", []Handshake{pq}, 10, Off, "", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr, _ := newTestTracker(10)
			for _, h := range tc.handshakes {
				tr.RecordHandshake(h)
			}
			for i := 0; i < tc.requests; i++ {
				tr.Record(ok)
			}
			rep := tr.Report([]PolicyInfo{{Name: name, Mode: tc.mode, Signatures: tc.sigs}}, "test")
			p := rep.Policies[0].PostQuantum
			if p.Verdict != tc.verdict || !strings.Contains(p.Why, tc.why) {
				t.Errorf("verdict %s (%s), want %s (%q)", p.Verdict, p.Why, tc.verdict, tc.why)
			}
			if (p.MLDSAShare == nil) != (tc.mlShare < 0) || (p.MLDSAShare != nil && *p.MLDSAShare != tc.mlShare) {
				t.Errorf("ML-DSA share %v, want %v", p.MLDSAShare, tc.mlShare)
			}
			if rep.Policies[0].Signatures != tc.sigs {
				t.Errorf("signatures %q", rep.Policies[0].Signatures)
			}
		})
	}

	t.Run("window and since start", func(t *testing.T) {
		tr, c := newTestTracker(1)
		tr.RecordHandshake(classical)
		c.t = c.t.Add(61 * time.Minute)
		tr.RecordHandshake(pq)
		tr.RecordHandshake(scannerPQ)
		p := tr.Report(policy("log-only"), "test").Policies[0].PostQuantum
		if p.SinceStart.Cloudflare != (PQCounts{Verified: 2, MLDSA: 1, PostQuantumKeyAgreement: 2}) ||
			p.LastHour.Cloudflare != (PQCounts{Verified: 1, MLDSA: 1, PostQuantumKeyAgreement: 1}) ||
			p.LastHour.Other != (PQCounts{Verified: 1}) {
			t.Errorf("counts %+v", p)
		}
		if p.KeyAgreementShare == nil || *p.KeyAgreementShare != 1 {
			t.Errorf("key agreement share %v", p.KeyAgreementShare)
		}
	})
}
