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
	pq     [2]PQCounts // verified handshakes by source: Cloudflare, other
}

// FailingSource is one address whose requests or handshakes failed for
// one reason, with how often and when last.
type FailingSource struct {
	Address  string    `json:"address"`
	Source   string    `json:"source"`
	Reason   string    `json:"reason"`
	Count    uint64    `json:"count"`
	LastSeen time.Time `json:"last_seen"`
}

type policyStats struct {
	total   map[key]uint64
	health  uint64
	pq      [2]PQCounts
	minutes [60]bucket
	failing []FailingSource // most recent first
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
		*b = bucket{minute: minute, counts: map[key]uint64{}}
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

// Handshake is one TLS handshake whose client certificate chain verified
// under its policy, or would have but for being classical under
// client_cert_signatures: post-quantum: the evidence for switching a policy
// to post-quantum.
type Handshake struct {
	Policy string
	Source string // SourceCloudflare or SourceOther
	// MLDSA: the chain is post-quantum throughout (ML-DSA leaf key and
	// signatures).
	MLDSA bool
	// PostQuantumKeyAgreement: the handshake's key agreement was
	// post-quantum (X25519MLKEM768 and the like).
	PostQuantumKeyAgreement bool
}

// RecordHandshake counts one verified handshake.
func (t *Tracker) RecordHandshake(h Handshake) {
	minute := t.now().Unix() / 60
	src := 1
	if h.Source == SourceCloudflare {
		src = 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	ps := t.policies[h.Policy]
	if ps == nil {
		ps = &policyStats{total: map[key]uint64{}}
		t.policies[h.Policy] = ps
	}
	b := &ps.minutes[minute%60]
	if b.minute != minute || b.counts == nil {
		*b = bucket{minute: minute, counts: map[key]uint64{}}
	}
	for _, c := range []*PQCounts{&ps.pq[src], &b.pq[src]} {
		c.Verified++
		if h.MLDSA {
			c.MLDSA++
		}
		if h.PostQuantumKeyAgreement {
			c.PostQuantumKeyAgreement++
		}
	}
}

// noteFailing counts a failure per address, source and reason: one address
// that failed for two reasons is two entries, so each entry's count agrees
// with the breakdown by reason.
func (ps *policyStats) noteFailing(e Event, now time.Time) {
	addr := e.Remote.String()
	for i, f := range ps.failing {
		if f.Address == addr && f.Source == e.Source && f.Reason == e.Reason {
			f.Count++
			f.LastSeen = now
			copy(ps.failing[1:i+1], ps.failing[:i])
			ps.failing[0] = f
			return
		}
	}
	f := FailingSource{Address: addr, Source: e.Source, Reason: e.Reason, Count: 1, LastSeen: now}
	ps.failing = append([]FailingSource{f}, ps.failing...)
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
	// Signatures is the policy's client_cert_signatures: any or
	// post-quantum.
	Signatures string
	CAs        []CAInfo
}

// PQCounts counts verified handshakes and how many of them were
// post-quantum.
type PQCounts struct {
	Verified                uint64 `json:"verified_handshakes"`
	MLDSA                   uint64 `json:"ml_dsa"`
	PostQuantumKeyAgreement uint64 `json:"pq_key_agreement"`
}

// PQBySource splits PQCounts by traffic source.
type PQBySource struct {
	Cloudflare PQCounts `json:"cloudflare"`
	Other      PQCounts `json:"other"`
}

// Post-quantum verdicts of a PQReport.
const (
	// SafeToSwitch: every verified Cloudflare handshake in the window had
	// an ML-DSA certificate: client_cert_signatures: post-quantum would
	// refuse none of them.
	SafeToSwitch = "safe_to_switch"
	// NotSafe: some verified Cloudflare handshakes had classical
	// certificates.
	NotSafe = "not_safe"
	// PostQuantumOn: the policy already accepts only ML-DSA certificates.
	PostQuantumOn = "post_quantum"
)

// PQReport is the post-quantum part of a policy's report: the share of
// verified handshakes with ML-DSA certificates and with post-quantum key
// agreement, and whether switching the policy to post-quantum is safe.
type PQReport struct {
	SinceStart PQBySource `json:"since_start"`
	LastHour   PQBySource `json:"last_hour"`
	// MLDSAShare and KeyAgreementShare are the shares (0..1) of the
	// last hour's verified Cloudflare handshakes; absent without any.
	MLDSAShare        *float64 `json:"ml_dsa_share,omitempty"`
	KeyAgreementShare *float64 `json:"pq_key_agreement_share,omitempty"`
	// Verdict is safe_to_switch, not_safe, no_traffic, post_quantum or off.
	Verdict string `json:"verdict"`
	Why     string `json:"why"`
}

// CAInfo is one trusted CA of a policy.
type CAInfo struct {
	Subject  string    `json:"subject"`
	NotAfter time.Time `json:"not_after"`
	DaysLeft int       `json:"days_left"`
}

// PolicyReport is the report for one policy.
type PolicyReport struct {
	Name           string          `json:"name"`
	Mode           string          `json:"mode"`
	CAs            []CAInfo        `json:"cas"`
	SinceStart     Counts          `json:"since_start"`
	LastHour       Counts          `json:"last_hour"`
	FailingSources []FailingSource `json:"failing_sources"`
	Verdict        string          `json:"verdict"`
	Why            string          `json:"why"`
	// Signatures is the policy's client_cert_signatures (any or
	// post-quantum) and PostQuantum the evidence for switching it.
	Signatures  string   `json:"client_cert_signatures"`
	PostQuantum PQReport `json:"post_quantum"`
}

// Report is the whole /status document.
type Report struct {
	Generated     time.Time `json:"generated"`
	Window        string    `json:"window"`
	MinRequests   uint64    `json:"min_requests"`
	CloudflareIPs string    `json:"cloudflare_ips"`
	// Replicas is how many aopguard instances a fleet report (aopguard
	// status --prometheus) sums; 0 in one instance's own report.
	Replicas int            `json:"replicas,omitempty"`
	Policies []PolicyReport `json:"policies"`
}

// Report builds the report for the given (currently configured) policies.
func (t *Tracker) Report(policies []PolicyInfo, cloudflareIPs string) Report {
	now := t.now()
	minute := now.Unix() / 60
	t.mu.Lock()
	defer t.mu.Unlock()
	r := Report{Generated: now.UTC(), Window: Window.String(), MinRequests: t.minRequests, CloudflareIPs: cloudflareIPs}
	for _, p := range policies {
		pr := PolicyReport{Name: p.Name, Mode: p.Mode, CAs: p.CAs, FailingSources: []FailingSource{}, Signatures: p.Signatures}
		if ps := t.policies[p.Name]; ps != nil {
			pr.PostQuantum.SinceStart = PQBySource{Cloudflare: ps.pq[0], Other: ps.pq[1]}
			pr.SinceStart = counts(ps.total, ps.health)
			hour := map[key]uint64{}
			var health uint64
			for _, b := range ps.minutes {
				if b.counts != nil && minute-b.minute < 60 {
					for k, n := range b.counts {
						hour[k] += n
					}
					health += b.health
					pr.PostQuantum.LastHour.Cloudflare.add(b.pq[0])
					pr.PostQuantum.LastHour.Other.add(b.pq[1])
				}
			}
			pr.LastHour = counts(hour, health)
			pr.FailingSources = append(pr.FailingSources, ps.failing...)
		} else {
			pr.SinceStart, pr.LastHour = counts(nil, 0), counts(nil, 0)
		}
		pr.Verdict, pr.Why = Judge(p.Mode, pr.LastHour, t.minRequests)
		t.postQuantumVerdict(p, &pr)
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
	"classical":         "the certificate Cloudflare sends is classical, and this policy accepts only ML-DSA (client_cert_signatures: post-quantum): upload an ML-DSA client certificate to Cloudflare",
	"needs_tls13":       "Cloudflare connects with TLS 1.2, where no ML-DSA certificate can be presented: whatever sits between Cloudflare and aopguard must allow TLS 1.3",
}

// Judge turns a policy's mode and its counts over the window into a verdict
// and the reason for it. It is the one place the rule lives: a Tracker's
// Report applies it to one instance's counts, "aopguard status
// --prometheus" to the counts of a whole fleet summed in Prometheus.
// minRequests is how many Cloudflare requests a ready verdict needs.
func Judge(mode string, hour Counts, minRequests uint64) (verdict, why string) {
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
	if cf < minRequests {
		return NoTraffic, fmt.Sprintf("%d requests from Cloudflare in the last hour, %d needed before enforcing can be judged safe", cf, minRequests)
	}
	return ReadyToEnforce, fmt.Sprintf("all %d requests from Cloudflare in the last hour presented a valid certificate", cf)
}

func (c *PQCounts) add(o PQCounts) {
	c.Verified += o.Verified
	c.MLDSA += o.MLDSA
	c.PostQuantumKeyAgreement += o.PostQuantumKeyAgreement
}

// postQuantumVerdict fills in pr.PostQuantum's shares and verdict. Only
// Cloudflare's handshakes count, as for the enforcement verdict: switching
// is safe when every verified Cloudflare handshake of the last hour already
// had an ML-DSA certificate, and there was enough traffic to judge.
func (t *Tracker) postQuantumVerdict(p PolicyInfo, pr *PolicyReport) {
	pq := &pr.PostQuantum
	cf := pq.LastHour.Cloudflare
	if cf.Verified > 0 {
		ml, ka := float64(cf.MLDSA)/float64(cf.Verified), float64(cf.PostQuantumKeyAgreement)/float64(cf.Verified)
		pq.MLDSAShare, pq.KeyAgreementShare = &ml, &ka
	}
	var cfRequests uint64
	for _, c := range pr.LastHour.By {
		if c.Source == SourceCloudflare {
			cfRequests += c.Count
		}
	}
	classical := cf.Verified - cf.MLDSA
	switch {
	case p.Mode == "off":
		pq.Verdict, pq.Why = Off, "certificates are not checked"
	case p.Signatures == "post-quantum" && p.Mode == "require":
		pq.Verdict, pq.Why = PostQuantumOn, "only ML-DSA certificates are accepted; classical ones are refused (reason classical)"
	case p.Signatures == "post-quantum":
		pq.Verdict, pq.Why = PostQuantumOn, "classical certificates are reported as would_reject/classical; switch mode to require once the policy is ready_to_enforce"
	case cf.Verified == 0:
		pq.Verdict, pq.Why = NoTraffic, "no verified handshake from Cloudflare in the last hour"
	case classical > 0:
		pq.Verdict, pq.Why = NotSafe, fmt.Sprintf("%d of %d verified handshakes from Cloudflare in the last hour had a classical certificate: client_cert_signatures: post-quantum would refuse them; upload an ML-DSA client certificate to Cloudflare first (aopguard certs client --key-type ml-dsa-65)",
			classical, cf.Verified)
	case cfRequests < t.minRequests:
		pq.Verdict, pq.Why = NoTraffic, fmt.Sprintf("all %d verified handshakes from Cloudflare in the last hour had ML-DSA certificates, but %d requests are too few to judge (%d needed)",
			cf.Verified, cfRequests, t.minRequests)
	default:
		pq.Verdict, pq.Why = SafeToSwitch, fmt.Sprintf("all %d verified handshakes from Cloudflare in the last hour had ML-DSA certificates: set client_cert_signatures: post-quantum (log-only first, then require)",
			cf.Verified)
	}
}

// PostQuantumShown reports whether a policy's post-quantum evidence says
// anything yet (not while the policy is off, nor while it accepts any
// signature and has verified no handshake), and the
// client_cert_signatures setting to show with it.
func (p PolicyReport) PostQuantumShown() (signatures string, ok bool) {
	pq := p.PostQuantum
	signatures = p.Signatures
	if signatures == "" {
		signatures = "any"
	}
	seen := pq.SinceStart.Cloudflare.Verified + pq.SinceStart.Other.Verified
	if pq.Verdict == "" || pq.Verdict == Off || (signatures == "any" && seen == 0) {
		return signatures, false
	}
	return signatures, true
}

// Percent formats one of a PQReport's shares: "-" when there is none.
func Percent(share *float64) string {
	if share == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", *share*100)
}
