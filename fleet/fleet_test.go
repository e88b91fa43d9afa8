package fleet

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/aopguard/aopguard/rollout"
)

// fakeAPI answers Query from a table; the real Prometheus is driven by
// cmd/aopguard's TestFleetStatusFromPrometheus.
type fakeAPI struct {
	v1.API
	answers map[string]model.Vector
	err     error
}

func (f fakeAPI) Query(_ context.Context, q string, _ time.Time, _ ...v1.Option) (model.Value, v1.Warnings, v1.Infos, error) {
	if f.err != nil {
		return nil, nil, nil, f.err
	}
	return f.answers[q], nil, nil, nil
}

func sample(v float64, labels ...string) *model.Sample {
	m := model.Metric{}
	for i := 0; i+1 < len(labels); i += 2 {
		m[model.LabelName(labels[i])] = model.LabelValue(labels[i+1])
	}
	return &model.Sample{Metric: m, Value: model.SampleValue(v)}
}

func TestReport(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	base := func() map[string]model.Vector {
		return map[string]model.Vector{
			QueryReplicas:    {sample(3)},
			QueryMinRequests: {sample(10)},
			QueryCAs: {
				sample(float64(now.AddDate(0, 0, 100).Unix()), "role", "zone_ca", "host", "_zone", "subject", "zone CA"),
				sample(float64(now.AddDate(0, 0, 20).Unix()), "role", "host_ca", "host", "app.example.com", "subject", "app CA"),
			},
		}
	}
	cases := []struct {
		name    string
		edit    func(a map[string]model.Vector)
		host    string
		verdict string
		mode    string
		why     string
		check   func(t *testing.T, p rollout.PolicyReport)
	}{
		{"ready across replicas", func(a map[string]model.Vector) {
			a[QueryPolicies] = model.Vector{sample(3, "host", "_zone", "mode", "log-only", "policy_id", "z1")}
			a[QueryLastHour] = model.Vector{
				sample(12.4, "host", "_zone", "policy_id", "z1", "result", "success", "source", "cloudflare"),
				sample(4, "host", "_zone", "policy_id", "z1", "result", "none", "reason", "missing", "source", "other"),
			}
		}, "_zone", rollout.ReadyToEnforce, "log-only", "all 12 requests", func(t *testing.T, p rollout.PolicyReport) {
			if len(p.CAs) != 1 || p.CAs[0].Subject != "zone CA" || p.CAs[0].DaysLeft != 100 {
				t.Errorf("zone CAs %+v", p.CAs)
			}
		}},
		{"one failure anywhere is not ready; the host's own CA", func(a map[string]model.Vector) {
			a[QueryPolicies] = model.Vector{sample(2, "host", "app.example.com", "mode", "log-only", "policy_id", "a1"),
				sample(1, "host", "app.example.com", "mode", "log-only", "policy_id", "a2")}
			a[QueryLastHour] = model.Vector{
				sample(50, "host", "app.example.com", "policy_id", "a1", "result", "success", "source", "cloudflare"),
				sample(10, "host", "app.example.com", "policy_id", "a2", "result", "success", "source", "cloudflare"),
				sample(0.6, "host", "app.example.com", "policy_id", "a2", "result", "failed", "reason", "untrusted", "source", "cloudflare"),
			}
		}, "app.example.com", rollout.NotReady, "log-only", "1 requests from Cloudflare without a valid certificate", func(t *testing.T, p rollout.PolicyReport) {
			if len(p.LastHour.By) != 2 || p.LastHour.By[0].Count != 60 {
				t.Errorf("policy_ids not merged: %+v", p.LastHour.By)
			}
			if len(p.CAs) != 1 || p.CAs[0].Subject != "app CA" {
				t.Errorf("host CAs %+v", p.CAs)
			}
		}},
		{"replicas disagree on the mode", func(a map[string]model.Vector) {
			a[QueryPolicies] = model.Vector{sample(1, "host", "app.example.com", "mode", "log-only", "policy_id", "a1"),
				sample(2, "host", "app.example.com", "mode", "require", "policy_id", "a2")}
		}, "app.example.com", rollout.NoTraffic, "log-only+require", "replicas disagree on the mode (log-only on 1, require on 2)", nil},
		{"enforced everywhere", func(a map[string]model.Vector) {
			a[QueryPolicies] = model.Vector{sample(3, "host", "app.example.com", "mode", "require", "policy_id", "a1")}
		}, "app.example.com", rollout.Enforced, "require", "already required", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := base()
			tc.edit(a)
			var queries []string
			rep, err := Report(context.Background(), fakeAPI{answers: a}, now, func(q string) { queries = append(queries, q) })
			if err != nil {
				t.Fatal(err)
			}
			if rep.Replicas != 3 || rep.MinRequests != 10 || len(queries) != 8 {
				t.Errorf("replicas %d, min %d, %d queries traced", rep.Replicas, rep.MinRequests, len(queries))
			}
			if len(rep.Policies) != 1 {
				t.Fatalf("policies %+v", rep.Policies)
			}
			p := rep.Policies[0]
			if p.Name != tc.host || p.Verdict != tc.verdict || p.Mode != tc.mode || !strings.Contains(p.Why, tc.why) {
				t.Errorf("%s: %s %s (%s), want %s %s containing %q", p.Name, p.Mode, p.Verdict, p.Why, tc.mode, tc.verdict, tc.why)
			}
			if p.FailingSources == nil {
				t.Error("failing sources must be an empty list, not null")
			}
			if tc.check != nil {
				tc.check(t, p)
			}
		})
	}
}

func TestReportErrors(t *testing.T) {
	if _, err := Report(context.Background(), fakeAPI{answers: map[string]model.Vector{}}, time.Now(), nil); !errors.Is(err, ErrNoFleet) {
		t.Errorf("no aopguard in Prometheus: %v", err)
	}
	boom := errors.New("connection refused")
	if _, err := Report(context.Background(), fakeAPI{err: boom}, time.Now(), nil); !errors.Is(err, boom) || !strings.Contains(err.Error(), QueryPolicies) {
		t.Errorf("a failed query: %v", err)
	}
}
