package metrics

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/aopguard/aopguard/internal/testtool"
)

func TestNames(t *testing.T) {
	names := New().Names()
	for _, want := range []string{
		"aopguard_client_cert_verifications_total",
		"aopguard_certificate_expiry_timestamp_seconds",
		"aopguard_requests_total",
		"aopguard_request_duration_seconds",
		"aopguard_upstream_duration_seconds",
		"aopguard_tls_handshakes_total",
		"aopguard_upstream_errors_total",
		"aopguard_health_checks_total",
		"aopguard_config_reloads_total",
		"aopguard_config_last_reload_success_timestamp_seconds",
		"aopguard_connections_refused_total",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("Names() lacks %s: %v", want, names)
		}
	}
}

func TestSetExpiriesKeepsClientSeries(t *testing.T) {
	m := New()
	m.ClientExpiry("app.example.com", "cloudflare client", 2e9)
	m.SetExpiries(nil)
	if n := testutil.CollectAndCount(m.expiry); n != 1 {
		t.Fatalf("%d expiry series after a reload, want the client one kept", n)
	}
	m.ForgetClientExpiry("app.example.com", "cloudflare client")
	if n := testutil.CollectAndCount(m.expiry); n != 0 {
		t.Fatalf("%d series after forgetting", n)
	}
}

var metricRef = regexp.MustCompile(`aopguard_[a-z_]+`)

// TestDeployFiles checks deploy/prometheus/alerts.yml and
// deploy/grafana/aopguard.json: promtool validates the rules and every
// dashboard query, and every aopguard metric they name is one we export.
func TestDeployFiles(t *testing.T) {
	root := filepath.Join("..", "deploy")
	alerts := filepath.Join(root, "prometheus", "alerts.yml")
	rulesText, err := os.ReadFile(alerts)
	if err != nil {
		t.Fatal(err)
	}
	recording := filepath.Join(root, "prometheus", "rules.yml")
	recordingText, err := os.ReadFile(recording)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	dashText, err := os.ReadFile(filepath.Join(root, "grafana", "aopguard.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(dashText, &dash); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}
	if len(dash.Panels) == 0 {
		t.Fatal("dashboard has no panels")
	}

	exported := New().Names()
	known := func(ref string) bool {
		for _, n := range exported {
			if ref == n || ref == n+"_bucket" || ref == n+"_sum" || ref == n+"_count" {
				return true
			}
		}
		return false
	}
	check := func(where, text string) {
		for _, ref := range metricRef.FindAllString(text, -1) {
			if !known(ref) {
				t.Errorf("%s refers to %s, which aopguard does not export", where, ref)
			}
		}
	}
	check(alerts, string(rulesText))
	check(recording, string(recordingText))

	// Each dashboard query becomes a recording rule so promtool parses it.
	// Grafana's own variables are given fixed values first.
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	grafana := strings.NewReplacer("$__rate_interval", "5m", "$host", ".*")
	for i, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for j, tg := range p.Targets {
			check(fmt.Sprintf("dashboard panel %q", p.Title), tg.Expr)
			expr, _ := json.Marshal(grafana.Replace(tg.Expr))
			fmt.Fprintf(&rules, "      - record: dashboard:panel%d:target%d\n        expr: %s\n", i, j, expr)
		}
	}
	dashRules := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(dashRules, []byte(rules.String()), 0o600); err != nil {
		t.Fatal(err)
	}

	promtool := testtool.Path(t, "promtool")
	for _, f := range []string{alerts, recording, dashRules} {
		if out, err := exec.Command(promtool, "check", "rules", f).CombinedOutput(); err != nil {
			t.Errorf("promtool check rules %s: %v\n%s", f, err, out)
		}
	}
	// The recording rules' own tests: synthetic replicas, one older than
	// the hour, one first scraped after its first events. Then the
	// alerts' own tests (a CRL going stale fires AOPCRLStale).
	for _, f := range []string{"rules_test.yml", "alerts_test.yml"} {
		unit := filepath.Join(root, "prometheus", f)
		if out, err := exec.Command(promtool, "test", "rules", unit).CombinedOutput(); err != nil {
			t.Errorf("promtool test rules %s: %v\n%s", unit, err, out)
		}
	}
}

// TestRolloutPolicies: evidence series start at 0 for every outcome, a
// changed policy_id drops the old series, and policy info and the minimum
// follow the last call.
func TestRolloutPolicies(t *testing.T) {
	m := New()
	outcomes := [][2]string{{"success", ""}, {"failed", "untrusted"}}
	sources := []string{"cloudflare", "other"}
	m.SetRolloutPolicies([]RolloutPolicy{
		{Host: "_zone", Mode: "log-only", ID: "aaa", Outcomes: outcomes, Sources: sources},
		{Host: "app.example.com", Mode: "log-only", ID: "bbb", Outcomes: outcomes, Sources: sources},
	}, 100)
	if n := testutil.CollectAndCount(m.evidence); n != 8 {
		t.Fatalf("%d evidence series, want 2 policies x 2 outcomes x 2 sources", n)
	}
	m.RolloutEvidence("app.example.com", "bbb", "failed", "untrusted", "cloudflare").Inc()
	m.SetRolloutPolicies([]RolloutPolicy{
		{Host: "_zone", Mode: "log-only", ID: "aaa", Outcomes: outcomes, Sources: sources},
		{Host: "app.example.com", Mode: "require", ID: "ccc", Outcomes: outcomes, Sources: sources},
	}, 5)
	if n := testutil.CollectAndCount(m.evidence); n != 8 {
		t.Fatalf("%d evidence series after the change, want the old policy's dropped", n)
	}
	if v := testutil.ToFloat64(m.RolloutEvidence("app.example.com", "ccc", "failed", "untrusted", "cloudflare")); v != 0 {
		t.Fatalf("new policy starts at %v", v)
	}
	if n := testutil.CollectAndCount(m.policyInfo); n != 2 {
		t.Fatalf("%d policy info series, want 2", n)
	}
	if v := testutil.ToFloat64(m.policyInfo.WithLabelValues("app.example.com", "require", "ccc")); v != 1 {
		t.Fatalf("policy info %v", v)
	}
	if v := testutil.ToFloat64(m.minRequests); v != 5 {
		t.Fatalf("min requests %v", v)
	}
}
