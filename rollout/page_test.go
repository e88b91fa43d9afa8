package rollout

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestPage renders a report and checks what a reader needs is there, and
// that text from configuration or traffic cannot become markup.
func TestPage(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	hostile := `evil.example.com"><script>alert(1)</script>`
	r := Report{Generated: now, Window: "1h0m0s", MinRequests: 10, CloudflareIPs: "embedded <b>list</b>", Policies: []PolicyReport{
		{Name: "_zone", Mode: "log-only", Verdict: ReadyToEnforce, Why: "all 12 requests",
			CAs:      []CAInfo{{Subject: "origin-pull.cloudflare.net", NotAfter: now.AddDate(3, 0, 0), DaysLeft: 1095}},
			LastHour: Counts{Total: 12, By: []Count{{Result: "success", Source: SourceCloudflare, Count: 12}}, HealthChecks: 3},
			SinceStart: Counts{Total: 15, By: []Count{{Result: "success", Source: SourceCloudflare, Count: 12},
				{Result: "none", Reason: "missing", Source: SourceOther, Count: 3}}}},
		{Name: hostile, Mode: "log-only", Verdict: NotReady, Why: "2 requests <from> Cloudflare",
			CAs:            []CAInfo{{Subject: "app <CA>", NotAfter: now.AddDate(0, 0, 10), DaysLeft: 10}},
			LastHour:       Counts{Total: 2, By: []Count{{Result: "failed", Reason: "untrusted", Source: SourceCloudflare, Count: 2}}},
			SinceStart:     Counts{Total: 2, By: []Count{{Result: "failed", Reason: "untrusted", Source: SourceCloudflare, Count: 2}}},
			FailingSources: []FailingSource{{Address: "<img src=x>", Source: SourceCloudflare, Reason: "untrusted", Count: 2, LastSeen: now}}},
	}}
	var b bytes.Buffer
	if err := WritePage(&b, r, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	html := b.String()
	for _, want := range []string{
		`<meta http-equiv="refresh" content="5">`,
		`data-host="_zone" data-verdict="ready_to_enforce"`,
		`data-verdict="not_ready"`,
		`evil.example.com&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;`,
		`&lt;img src=x&gt;`,
		`embedded &lt;b&gt;list&lt;/b&gt;`,
		`2 requests &lt;from&gt; Cloudflare`,
		`<div class="bar urgent"><span style="width: 0%">`, // 10 days of 1095
		`<div class="bar ok">`,
		`<td>missing</td><td class="n">0</td><td class="n">3</td>`, // since start only
		`health checks (counted apart): 3`,
	} {
		if !strings.Contains(html, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, bad := range []string{"<script>", "<img", "<b>list"} {
		if strings.Contains(html, bad) {
			t.Errorf("page contains unescaped %q", bad)
		}
	}
	// The CA expiring first comes first on the timeline.
	if strings.Index(html, "app &lt;CA&gt;") > strings.Index(html, "origin-pull.cloudflare.net</td>") {
		t.Error("timeline not sorted by expiry")
	}
}
