// Package fleet builds the rollout report of a whole fleet of aopguard
// replicas from Prometheus: the counts every replica exports, summed by
// the recording rules of deploy/prometheus/rules.yml, judged by the same
// rule (rollout.Judge) each replica applies to its own /status.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/aopguard/aopguard/rollout"
)

// The queries, in the order Report runs them. The series named
// aopguard:... are recorded by deploy/prometheus/rules.yml; evidence
// counts only under a policy (mode and CAs, by policy_id) some replica
// runs now, as a replica's own report forgets evidence when its policy
// changes.
const (
	QueryPolicies    = `aopguard:policy_replicas:count`
	QueryReplicas    = `count(aopguard_rollout_min_requests)`
	QueryMinRequests = `max(aopguard_rollout_min_requests)`
	QueryLastHour    = `aopguard:rollout_evidence:increase1h and on(host, policy_id) aopguard:policy_replicas:count`
	QuerySinceStart  = `sum by (host, result, reason, source) (aopguard_rollout_evidence_total and on(host, policy_id) aopguard:policy_replicas:count)`
	QueryHealthHour  = `aopguard:health_checks:increase1h`
	QueryHealthTotal = `sum by (host) (aopguard_health_checks_total)`
	QueryCAs         = `max by (role, host, subject) (aopguard_certificate_expiry_timestamp_seconds{role=~"zone_ca|host_ca"})`
)

// ErrNoFleet means Prometheus holds no aopguard policies: it does not
// scrape aopguard, or the recording rules are not loaded.
var ErrNoFleet = errors.New("no " + QueryPolicies + " series in Prometheus: does it scrape aopguard's admin /metrics, and does it load the recording rules of deploy/prometheus/rules.yml?")

// CloudflareIPs is what a fleet report says about Cloudflare's ranges:
// each replica classifies its own traffic.
const CloudflareIPs = "as classified by each replica"

// Report queries Prometheus at now and builds the fleet's report. Failing
// sources are not in Prometheus (addresses are no label): each replica's
// /status lists its own. trace, when not nil, sees every query before it
// runs.
func Report(ctx context.Context, api v1.API, now time.Time, trace func(query string)) (rollout.Report, error) {
	q := func(query string) (model.Vector, error) {
		if trace != nil {
			trace(query)
		}
		v, _, _, err := api.Query(ctx, query, now)
		if err != nil {
			return nil, fmt.Errorf("query %s: %w", query, err)
		}
		vec, ok := v.(model.Vector)
		if !ok {
			return nil, fmt.Errorf("query %s: got a %s, want an instant vector", query, v.Type())
		}
		return vec, nil
	}
	rep := rollout.Report{Generated: now.UTC(), Window: rollout.Window.String(), CloudflareIPs: CloudflareIPs}
	policies, err := q(QueryPolicies)
	if err != nil {
		return rep, err
	}
	if len(policies) == 0 {
		return rep, ErrNoFleet
	}
	scalar := func(query string) (float64, error) {
		v, err := q(query)
		if err != nil || len(v) == 0 {
			return 0, err
		}
		return float64(v[0].Value), nil
	}
	replicas, err := scalar(QueryReplicas)
	if err != nil {
		return rep, err
	}
	minRequests, err := scalar(QueryMinRequests)
	if err != nil {
		return rep, err
	}
	rep.Replicas, rep.MinRequests = int(replicas), uint64(minRequests)

	hosts := map[string]*host{}
	for _, s := range policies {
		h := hosts[label(s, "host")]
		if h == nil {
			h = &host{modes: map[string]int{}}
			hosts[label(s, "host")] = h
		}
		h.modes[label(s, "mode")] += int(s.Value)
	}
	for _, c := range []struct {
		query string
		add   func(h *host, s *model.Sample)
	}{
		{QueryLastHour, func(h *host, s *model.Sample) { h.hour = append(h.hour, row(s)) }},
		{QuerySinceStart, func(h *host, s *model.Sample) { h.total = append(h.total, row(s)) }},
		{QueryHealthHour, func(h *host, s *model.Sample) { h.hourHealth += count(s) }},
		{QueryHealthTotal, func(h *host, s *model.Sample) { h.totalHealth += count(s) }},
	} {
		v, err := q(c.query)
		if err != nil {
			return rep, err
		}
		for _, s := range v {
			if h := hosts[label(s, "host")]; h != nil {
				c.add(h, s)
			}
		}
	}
	cas, err := q(QueryCAs)
	if err != nil {
		return rep, err
	}

	names := make([]string, 0, len(hosts))
	for name := range hosts {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool { // the zone first, as in /status
		if (names[i] == "_zone") != (names[j] == "_zone") {
			return names[i] == "_zone"
		}
		return names[i] < names[j]
	})
	for _, name := range names {
		h := hosts[name]
		pr := rollout.PolicyReport{Name: name, CAs: policyCAs(cas, name, now), FailingSources: []rollout.FailingSource{},
			SinceStart: merge(h.total, h.totalHealth), LastHour: merge(h.hour, h.hourHealth)}
		mode, disagree := h.mode()
		pr.Mode = mode
		judged := mode
		if disagree != "" {
			judged = "log-only" // is it safe to enforce everywhere?
		}
		pr.Verdict, pr.Why = rollout.Judge(judged, pr.LastHour, rep.MinRequests)
		if disagree != "" {
			pr.Why = disagree + "; " + pr.Why
		}
		rep.Policies = append(rep.Policies, pr)
	}
	return rep, nil
}

// host gathers one policy name's series.
type host struct {
	modes                   map[string]int // mode -> replicas running it
	hour, total             []rollout.Count
	hourHealth, totalHealth uint64
}

// mode is the policy's mode across the fleet, and when replicas disagree
// a sentence saying how.
func (h *host) mode() (string, string) {
	modes := make([]string, 0, len(h.modes))
	for m := range h.modes {
		modes = append(modes, m)
	}
	sort.Strings(modes)
	if len(modes) == 1 {
		return modes[0], ""
	}
	var parts []string
	for _, m := range modes {
		parts = append(parts, fmt.Sprintf("%s on %d", m, h.modes[m]))
	}
	return strings.Join(modes, "+"), "replicas disagree on the mode (" + strings.Join(parts, ", ") + ")"
}

func label(s *model.Sample, name model.LabelName) string { return string(s.Metric[name]) }

// count rounds a summed increase: Prometheus extrapolates increase() to
// the window's edges, so counts are close, not exact; any observed
// increment stays at least 1.
func count(s *model.Sample) uint64 {
	f := float64(s.Value)
	if math.IsNaN(f) || f <= 0 {
		return 0
	}
	return uint64(math.Max(1, math.Round(f)))
}

func row(s *model.Sample) rollout.Count {
	return rollout.Count{Result: label(s, "result"), Reason: label(s, "reason"), Source: label(s, "source"), Count: count(s)}
}

// merge sums rows that differ only by policy_id (replicas whose CAs
// differ) and sorts them as a replica's report does.
func merge(rows []rollout.Count, health uint64) rollout.Counts {
	type key struct{ result, reason, source string }
	sum := map[key]uint64{}
	for _, r := range rows {
		sum[key{r.Result, r.Reason, r.Source}] += r.Count
	}
	c := rollout.Counts{HealthChecks: health, By: []rollout.Count{}}
	for k, n := range sum {
		if n == 0 {
			continue
		}
		c.Total += n
		c.By = append(c.By, rollout.Count{Result: k.result, Reason: k.reason, Source: k.source, Count: n})
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

// policyCAs lists the CAs the fleet reports for a policy: a host's own
// (host_ca), else the zone's, which hosts without a CA inherit.
func policyCAs(cas model.Vector, name string, now time.Time) []rollout.CAInfo {
	pick := func(role, hostLabel string) []rollout.CAInfo {
		var out []rollout.CAInfo
		for _, s := range cas {
			if label(s, "role") == role && (hostLabel == "" || label(s, "host") == hostLabel) {
				na := time.Unix(int64(s.Value), 0).UTC()
				out = append(out, rollout.CAInfo{Subject: label(s, "subject"), NotAfter: na, DaysLeft: int(na.Sub(now).Hours() / 24)})
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].NotAfter.Before(out[j].NotAfter) })
		return out
	}
	if name != "_zone" {
		if own := pick("host_ca", name); len(own) > 0 {
			return own
		}
	}
	return pick("zone_ca", "")
}
