// Package rollout answers the question log-only mode exists for: would
// enforcing client certificates break real Cloudflare traffic? It counts,
// per policy, requests (and refused handshakes) by outcome and by source
// (Cloudflare's edge or anything else), since start and over a sliding
// hour, remembers the latest distinct failing sources, and turns that into
// a verdict: ready_to_enforce, not_ready (with the likely cause) or
// no_traffic.
package rollout

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aopguard/aopguard/cfips"
)

// Sources of traffic, as cfips classifies them.
const (
	SourceCloudflare = cfips.Cloudflare
	SourceOther      = cfips.Other
)

// Verdicts of a Report.
const (
	ReadyToEnforce = "ready_to_enforce"
	NotReady       = "not_ready"
	NoTraffic      = "no_traffic"
	Enforced       = "enforced" // the policy already requires certificates
	Off            = "off"      // the policy does not check certificates
)

// Window is the sliding window the verdict looks at.
const Window = time.Hour

// maxFailingSources is how many distinct failing addresses a policy keeps.
const maxFailingSources = 20

// Event is one judged request, or one handshake refused before any request.
type Event struct {
	Policy      string
	Result      string // success, failed or none
	Reason      string // "" on success
	Source      string // SourceCloudflare or SourceOther
	Remote      netip.Addr
	HealthCheck bool // Cloudflare load-balancer health check: counted apart
}

// key is one counted combination.
type key struct{ result, reason, source string }

type bucket struct {
	minute int64 // Unix minute this bucket counts; stale buckets are reused
	counts map[key]uint64
	health uint64
}

type failing struct {
	Address  string    `json:"address"`
	Source   string    `json:"source"`
	Reason   string    `json:"reason"`
	Count    uint64    `json:"count"`
	LastSeen time.Time `json:"last_seen"`
}

type policyStats struct {
	total   map[key]uint64
	health  uint64
	minutes [60]bucket
	failing []failing // most recent first
}

// Tracker accumulates Events. It is safe for concurrent use; policies are
// keyed by name, so counts survive reloads that keep the name.
type Tracker struct {
	mu       sync.Mutex
	policies map[string]*policyStats
	now      func() time.Time
	// minRequests is how many non-health-check requests from Cloudflare
	// the window must hold before a policy can be called ready to enforce.
	minRequests uint64
}

// NewTracker returns a Tracker that needs minRequests Cloudflare requests
// in the window before it calls a policy ready.
func NewTracker(minRequests uint64) *Tracker {
	return &Tracker{policies: map[string]*policyStats{}, now: time.Now, minRequests: minRequests}
}

// SetMinRequests changes the traffic needed for a ready verdict.
func (t *Tracker) SetMinRequests(n uint64) {
	t.mu.Lock()
	t.minRequests = n
	t.mu.Unlock()
}

// Reset forgets a policy's counts: its CAs or mode changed, so evidence
// gathered under the old configuration says nothing about the new one.
func (t *Tracker) Reset(policy string) {
	t.mu.Lock()
	delete(t.policies, policy)
	t.mu.Unlock()
}

// Record counts one event.
func (t *Tracker) Record(e Event) {
	now := t.now()
	minute := now.Unix() / 60
	t.mu.Lock()
	defer t.mu.Unlock()
	ps := t.policies[e.Policy]
	if ps == nil {
		ps = &policyStats{total: map[key]uint64{}}
		t.policies[e.Policy] = ps
	}
	b := &ps.minutes[minute%60]
	if b.minute != minute || b.counts == nil {
		b.minute, b.counts, b.health = minute, map[key]uint64{}, 0
	}
	if e.HealthCheck {
		ps.health++
		b.health++
		return
	}
	k := key{e.Result, e.Reason, e.Source}
	ps.total[k]++
	b.counts[k]++
	if e.Result != "success" && e.Reason != "" {
		ps.noteFailing(e, now)
	}
}

func (ps *policyStats) noteFailing(e Event, now time.Time) {
	addr := e.Remote.String()
	for i, f := range ps.failing {
		if f.Address == addr {
			f.Count++
			f.LastSeen, f.Reason, f.Source = now, e.Reason, e.Source
			copy(ps.failing[1:i+1], ps.failing[:i])
			ps.failing[0] = f
			return
		}
	}
	f := failing{Address: addr, Source: e.Source, Reason: e.Reason, Count: 1, LastSeen: now}
	ps.failing = append([]failing{f}, ps.failing...)
	if len(ps.failing) > maxFailingSources {
		ps.failing = ps.failing[:maxFailingSources]
	}
}

// Count is one row of a Report's counts.
type Count struct {
	Result string `json:"result"`
	Reason string `json:"reason,omitempty"`
	Source string `json:"source"`
	Count  uint64 `json:"count"`
}

// Counts is a set of rows plus the health checks counted apart.
type Counts struct {
	Total        uint64  `json:"total"`
	HealthChecks uint64  `json:"health_checks"`
	By           []Count `json:"by"`
}

// PolicyInfo describes a configured policy for the report.
type PolicyInfo struct {
	Name string
	Mode string // off, log-only or require
	CAs  []CAInfo
}

// CAInfo is one trusted CA of a policy.
type CAInfo struct {
	Subject  string    `json:"subject"`
	NotAfter time.Time `json:"not_after"`
	DaysLeft int       `json:"days_left"`
}

// PolicyReport is the report for one policy.
type PolicyReport struct {
	Name           string    `json:"name"`
	Mode           string    `json:"mode"`
	CAs            []CAInfo  `json:"cas"`
	SinceStart     Counts    `json:"since_start"`
	LastHour       Counts    `json:"last_hour"`
	FailingSources []failing `json:"failing_sources"`
	Verdict        string    `json:"verdict"`
	Why            string    `json:"why"`
}

// Report is the whole /status document.
type Report struct {
	Generated     time.Time      `json:"generated"`
	Window        string         `json:"window"`
	MinRequests   uint64         `json:"min_requests"`
	CloudflareIPs string         `json:"cloudflare_ips"`
	Policies      []PolicyReport `json:"policies"`
}

// Report builds the report for the given (currently configured) policies.
func (t *Tracker) Report(policies []PolicyInfo, cloudflareIPs string) Report {
	now := t.now()
	minute := now.Unix() / 60
	t.mu.Lock()
	defer t.mu.Unlock()
	r := Report{Generated: now.UTC(), Window: Window.String(), MinRequests: t.minRequests, CloudflareIPs: cloudflareIPs}
	for _, p := range policies {
		pr := PolicyReport{Name: p.Name, Mode: p.Mode, CAs: p.CAs, FailingSources: []failing{}}
		if ps := t.policies[p.Name]; ps != nil {
			pr.SinceStart = counts(ps.total, ps.health)
			hour := map[key]uint64{}
			var health uint64
			for _, b := range ps.minutes {
				if b.counts != nil && minute-b.minute < 60 {
					for k, n := range b.counts {
						hour[k] += n
					}
					health += b.health
				}
			}
			pr.LastHour = counts(hour, health)
			pr.FailingSources = append(pr.FailingSources, ps.failing...)
		} else {
			pr.SinceStart, pr.LastHour = counts(nil, 0), counts(nil, 0)
		}
		pr.Verdict, pr.Why = t.verdict(p.Mode, pr.LastHour)
		r.Policies = append(r.Policies, pr)
	}
	return r
}

func counts(m map[key]uint64, health uint64) Counts {
	c := Counts{HealthChecks: health, By: []Count{}}
	for k, n := range m {
		c.Total += n
		c.By = append(c.By, Count{Result: k.result, Reason: k.reason, Source: k.source, Count: n})
	}
	sort.Slice(c.By, func(i, j int) bool {
		a, b := c.By[i], c.By[j]
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		return a.Result+a.Reason+a.Source < b.Result+b.Reason+b.Source
	})
	return c
}

// causes maps a failure reason seen from Cloudflare to its likely cause.
var causes = map[string]string{
	"missing":           "Cloudflare sends no client certificate: is Authenticated Origin Pulls enabled for the zone (SSL/TLS > Origin Server)?",
	"zone_cert_on_host": "Cloudflare sends the zone certificate, not this hostname's: is per-hostname AOP enabled for this hostname?",
	"untrusted":         "the certificate Cloudflare sends does not chain to this policy's CA: AOP not enabled for this hostname at Cloudflare, or the wrong CA bundle here?",
	"expired":           "the certificate Cloudflare sends has expired: upload a renewed one",
	"not_yet_valid":     "the certificate Cloudflare sends is not valid yet: check clocks and the certificate's start date",
	"wrong_usage":       "the certificate Cloudflare sends does not allow client authentication (clientAuth extended key usage)",
	"revoked":           "the certificate Cloudflare sends is revoked by this policy's CRL",
	"not_allowed":       "the certificate Cloudflare sends does not match this policy's allow rules",
	"crl_stale":         "this policy's CRL is past its NextUpdate and crl_stale is refuse: load a fresh CRL",
}

func (t *Tracker) verdict(mode string, hour Counts) (string, string) {
	switch mode {
	case "require":
		return Enforced, "certificates are already required"
	case "off":
		return Off, "certificates are not checked"
	}
	var cf, cfBad uint64
	reasons := map[string]uint64{}
	for _, c := range hour.By {
		if c.Source != SourceCloudflare {
			continue
		}
		cf += c.Count
		if c.Result != "success" {
			cfBad += c.Count
			reasons[c.Reason] += c.Count
		}
	}
	if cfBad > 0 {
		top, n := "", uint64(0)
		for r, c := range reasons {
			if c > n || (c == n && r < top) {
				top, n = r, c
			}
		}
		var parts []string
		for r, c := range reasons {
			parts = append(parts, fmt.Sprintf("%s %d", r, c))
		}
		sort.Strings(parts)
		cause := causes[top]
		if cause == "" {
			cause = "see the failing sources"
		}
		return NotReady, fmt.Sprintf("%d requests from Cloudflare without a valid certificate in the last hour (%s): %s",
			cfBad, strings.Join(parts, ", "), cause)
	}
	if cf < t.minRequests {
		return NoTraffic, fmt.Sprintf("%d requests from Cloudflare in the last hour, %d needed before enforcing can be judged safe", cf, t.minRequests)
	}
	return ReadyToEnforce, fmt.Sprintf("all %d requests from Cloudflare in the last hour presented a valid certificate", cf)
}
