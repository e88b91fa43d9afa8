package main

import (
	"bytes"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/aopguard/aopguard/cfips"
	"github.com/aopguard/aopguard/rollout"
	"github.com/aopguard/aopguard/tlsconfig"
)

// TestEveryOutcomeHasEvidenceCounter: every (result, reason) a policy can
// produce, needs_tls13 included, has an exported evidence counter that
// recordEvidence increments; an outcome without one would be seen by the
// replica's /status and never by the fleet report.
func TestEveryOutcomeHasEvidenceCounter(t *testing.T) {
	p := newPKI(t)
	cfgPath := writeConfig(t, p.dir, "upstream: http://127.0.0.1:1\nzone_ca: zone-ca.pem\n")
	a, _ := appFor(t, cfgPath, &bytes.Buffer{})
	policy := tlsconfig.ZoneName
	for _, v := range tlsconfig.Outcomes() {
		for _, src := range []string{cfips.Cloudflare, cfips.Other} {
			t.Run(v.Result.String()+"/"+v.Reason+"/"+src, func(t *testing.T) {
				c := (*a.evidence.Load())[evidenceKey{policy, v.Result.String(), v.Reason, src}]
				if c == nil {
					t.Fatalf("no exported evidence counter for %s/%s from %s", v.Result, v.Reason, src)
				}
				before := testutil.ToFloat64(c)
				a.recordEvidence(rollout.Event{Policy: policy, Result: v.Result.String(), Reason: v.Reason, Source: src})
				if got := testutil.ToFloat64(c); got != before+1 {
					t.Fatalf("counter %s/%s from %s = %v after one event, want %v", v.Result, v.Reason, src, got, before+1)
				}
			})
		}
	}
}
