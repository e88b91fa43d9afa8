package main

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aopguard/aopguard/internal/testpki"
	"github.com/aopguard/aopguard/rollout"
)

// fromAddr makes requests from a chosen loopback address, so a test can
// play Cloudflare (an address in the test's cloudflare_ips list) or a
// scanner (any other).
func fromAddr(t *testing.T, local, addr string, cfg *tls.Config, host, ua string) (*http.Response, error) {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	tr := &http.Transport{TLSClientConfig: cfg, DialContext: d.DialContext, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "https://"+addr+"/", nil)
	req.Host = host
	if ua != "" {
		req.Header.Set("User-Agent", ua)
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, err
}

const (
	cloudflareAddr = "127.0.0.2"
	scannerAddr    = "127.0.0.3"
)

func statusReport(t *testing.T, g *proc) rollout.Report {
	t.Helper()
	resp, err := http.Get("http://" + g.admin + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rep rollout.Report
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

func policyReport(t *testing.T, rep rollout.Report, name string) rollout.PolicyReport {
	t.Helper()
	for _, p := range rep.Policies {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no policy %s in %+v", name, rep)
	return rollout.PolicyReport{}
}

// statusCLI runs "aopguard status" against g and returns exit code and output.
func statusCLI(t *testing.T, g *proc, args ...string) (int, string) {
	t.Helper()
	return runCmd(t, exec.Command(binary, append([]string{"status", "--admin", g.admin}, args...)...))
}

// TestRolloutReport follows a per-hostname rollout in log-only mode with
// traffic from "Cloudflare" and from elsewhere, and checks the metrics, the
// log lines, the upstream's header and the report's verdict.
func TestRolloutReport(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t)
	// The CA whose certificate Cloudflare really presents for the host:
	// at first the operator configured another one.
	cfHostCA := testpki.CA(t, "app AOP CA (uploaded)")
	cfHostLeaf := testpki.Client(t, cfHostCA, "app.example.com")
	p.write(t, "cf-ips.txt", []byte("# test: plays Cloudflare\n"+cloudflareAddr+"/32\n"))
	cfg := `
upstream: ` + up.URL + `
mode: log-only
zone_ca: zone-ca.pem
cloudflare_ips: cf-ips.txt
ready_min_requests: 5
certificates:
  - cert: server.pem
    key: server.key
hosts:
  - name: app.example.com
    ca: host-ca.pem
`
	writeConfig(t, p.dir, cfg)
	g := start(t, "--config", p.path("aopguard.yaml"))
	zoneFromCF := p.clientTLS("localhost", p.zoneLeaf)
	hostFromCF := func(leaf *testpki.Cert) *tls.Config { return p.clientTLS("app.example.com", leaf) }

	// Zone: Cloudflare with the zone certificate, its health checks (no
	// certificate) and scanners. Only the first counts towards readiness.
	for i := 0; i < 5; i++ {
		if resp, err := fromAddr(t, cloudflareAddr, g.listen, zoneFromCF, "localhost", ""); err != nil || resp.Header.Get("X-Upstream-Saw-Client-Verify") != "SUCCESS" {
			t.Fatalf("zone request from Cloudflare: %v %v", resp, err)
		}
	}
	for i := 0; i < 2; i++ {
		if _, err := fromAddr(t, cloudflareAddr, g.listen, p.clientTLS("localhost", nil), "localhost", "Mozilla/5.0 (compatible; Cloudflare-Traffic-Manager/1.0)"); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		if resp, err := fromAddr(t, scannerAddr, g.listen, p.clientTLS("", nil), "203.0.113.7", "zgrab/0.x"); err != nil || resp.Header.Get("X-Upstream-Saw-Client-Verify") != "NONE" {
			t.Fatalf("scanner: %v %v", resp, err)
		}
	}

	// Host: Cloudflare still sends the zone certificate (per-hostname AOP
	// not enabled yet), then the certificate of a CA we do not trust.
	for i := 0; i < 3; i++ {
		resp, err := fromAddr(t, cloudflareAddr, g.listen, hostFromCF(p.zoneLeaf), "app.example.com", "")
		if err != nil || resp.Header.Get("X-Upstream-Saw-Client-Verify") != "FAILED:zone_cert_on_host" {
			t.Fatalf("host request with the zone cert: %v %v", resp, err)
		}
	}
	for i := 0; i < 2; i++ {
		resp, err := fromAddr(t, cloudflareAddr, g.listen, hostFromCF(cfHostLeaf), "app.example.com", "")
		if err != nil || resp.Header.Get("X-Upstream-Saw-Client-Verify") != "FAILED:untrusted" {
			t.Fatalf("host request with the uploaded cert: %v %v", resp, err)
		}
	}

	g.waitLog("request", 15)
	rep := statusReport(t, g)
	zone, host := policyReport(t, rep, "_zone"), policyReport(t, rep, "app.example.com")
	if zone.Verdict != rollout.ReadyToEnforce || zone.LastHour.HealthChecks != 2 {
		t.Errorf("zone: %s (%s), health checks %d", zone.Verdict, zone.Why, zone.LastHour.HealthChecks)
	}
	if host.Verdict != rollout.NotReady || !strings.Contains(host.Why, "5 requests from Cloudflare without a valid certificate") ||
		!strings.Contains(host.Why, "zone_cert_on_host 3") || !strings.Contains(host.Why, "untrusted 2") {
		t.Errorf("host: %s (%s)", host.Verdict, host.Why)
	}
	// One address, two reasons: two entries whose counts agree with the
	// breakdown (zone_cert_on_host 3, untrusted 2).
	if f := host.FailingSources; len(f) != 2 || f[0].Address != cloudflareAddr || f[0].Source != "cloudflare" ||
		f[0].Reason != "untrusted" || f[0].Count != 2 || f[1].Reason != "zone_cert_on_host" || f[1].Count != 3 {
		t.Errorf("host failing sources %+v", host.FailingSources)
	}
	if len(zone.FailingSources) != 1 || zone.FailingSources[0].Address != scannerAddr || zone.FailingSources[0].Reason != "missing" {
		t.Errorf("zone failing sources %+v (health checks must not be listed)", zone.FailingSources)
	}
	if !strings.Contains(rep.CloudflareIPs, "cf-ips.txt") {
		t.Errorf("report does not say which Cloudflare ranges it used: %q", rep.CloudflareIPs)
	}
	code, out := statusCLI(t, g)
	if code != 1 || !strings.Contains(out, "app.example.com") || !strings.Contains(out, "not_ready") || strings.Contains(out, "\x1b[") ||
		!strings.Contains(out, "failing source "+cloudflareAddr+" (cloudflare): untrusted ×2") ||
		!strings.Contains(out, "failing source "+cloudflareAddr+" (cloudflare): zone_cert_on_host ×3") {
		t.Errorf("aopguard status: exit %d (want 1, no colour into a pipe):\n%s", code, out)
	}

	// Metrics: reason and source labels, health checks apart.
	for series, want := range map[string]string{
		`aopguard_client_cert_verifications_total{action="would_reject",host="app.example.com",mode="log-only",reason="zone_cert_on_host",result="failed",source="cloudflare"}`: "3",
		`aopguard_client_cert_verifications_total{action="would_reject",host="app.example.com",mode="log-only",reason="untrusted",result="failed",source="cloudflare"}`:         "2",
		`aopguard_client_cert_verifications_total{action="allow",host="_zone",mode="log-only",reason="",result="success",source="cloudflare"}`:                                  "5",
		`aopguard_client_cert_verifications_total{action="would_reject",host="_zone",mode="log-only",reason="missing",result="none",source="other"}`:                            "3",
		`aopguard_health_checks_total{host="_zone",result="none"}`:                                        "2",
		`aopguard_tls_handshakes_total{host="app.example.com",result="ok",resumed="false",version="1.3"}`: "5",
		`aopguard_requests_total{code_class="2xx",host="app.example.com"}`:                                "5",
		`aopguard_request_duration_seconds_count{host="app.example.com"}`:                                 "5",
		`aopguard_upstream_duration_seconds_count{host="app.example.com"}`:                                "5",
	} {
		if got := g.metric(series); got != want {
			t.Errorf("%s = %q, want %s; have %q", series, got, want, g.metrics(series[:strings.IndexByte(series, '{')]))
		}
	}
	// Logs: the would-be refusal names the reason and the source.
	var sawCF bool
	for _, l := range g.all("client certificate would be refused under require (log-only: admitted)") {
		if l["policy"] == "app.example.com" && l["reason"] == "zone_cert_on_host" && l["source"] == "cloudflare" {
			sawCF = true
		}
	}
	if !sawCF {
		t.Error("no would-refuse log line for Cloudflare's zone certificate on the host")
	}

	// The operator puts the CA Cloudflare really uses in the bundle and
	// reloads: the host's evidence restarts, and enough valid Cloudflare
	// traffic makes it ready.
	p.write(t, "host-ca.pem", testpki.Bundle(p.hostCA, cfHostCA))
	if !g.reload() {
		t.Fatal("reload failed")
	}
	if host := policyReport(t, statusReport(t, g), "app.example.com"); host.Verdict != rollout.NoTraffic || host.SinceStart.Total != 0 {
		t.Errorf("after the CA change: %s, %d counted", host.Verdict, host.SinceStart.Total)
	}
	for i := 0; i < 5; i++ {
		resp, err := fromAddr(t, cloudflareAddr, g.listen, hostFromCF(cfHostLeaf), "app.example.com", "")
		if err != nil || resp.Header.Get("X-Upstream-Saw-Client-Verify") != "SUCCESS" {
			t.Fatalf("host request after the fix: %v %v", resp, err)
		}
	}
	g.waitLog("request", 20)
	host = policyReport(t, statusReport(t, g), "app.example.com")
	if host.Verdict != rollout.ReadyToEnforce {
		t.Fatalf("after the fix: %s (%s)", host.Verdict, host.Why)
	}
	if code, out := statusCLI(t, g); code != 0 || !strings.Contains(out, "ready_to_enforce") {
		t.Errorf("aopguard status: exit %d, want 0:\n%s", code, out)
	}
	if code, out := statusCLI(t, g, "--json"); code != 0 || !json.Valid([]byte(out)) {
		t.Errorf("aopguard status --json: exit %d:\n%s", code, out)
	}
	// Client certificates that verified are reported for expiry.
	if v := g.metric(`aopguard_certificate_expiry_timestamp_seconds{host="app.example.com",role="client",subject="app.example.com"}`); v == "" {
		t.Error("no expiry series for the client certificate seen")
	}
}

// TestExpiryWarnings: loaded CAs and seen client certificates inside 30 or
// 14 days of expiry are logged as warnings, expired ones as errors.
func TestExpiryWarnings(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t)
	in := func(days int) time.Time { return time.Now().Add(time.Duration(days)*24*time.Hour + time.Hour) }
	soonCA := testpki.New(t, nil, testpki.Options{CN: "CA expiring in 20 days", IsCA: true, NotAfter: in(20)})
	urgentCA := testpki.New(t, nil, testpki.Options{CN: "CA expiring in 10 days", IsCA: true, NotAfter: in(10)})
	expiredCA := testpki.New(t, nil, testpki.Options{CN: "expired CA", IsCA: true, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	leaf := testpki.New(t, soonCA, testpki.Options{CN: "client expiring in 5 days", NotAfter: in(5)})
	p.write(t, "zone-bundle.pem", testpki.Bundle(soonCA, urgentCA, expiredCA))
	g := start(t, "--upstream", up.URL, "--mode", "log-only", "--zone-ca", p.path("zone-bundle.pem"),
		"--cert", p.path("server.pem"), "--key", p.path("server.key"))
	want := map[string]struct {
		level     string
		threshold float64
	}{
		"CA expiring in 20 days": {"warn", 30},
		"CA expiring in 10 days": {"warn", 14},
		"expired CA":             {"error", 0},
	}
	check := func(subject, level string, threshold float64) {
		t.Helper()
		msg := "certificate expires soon"
		if level == "error" {
			msg = "certificate has expired"
		}
		for _, l := range g.all(msg) {
			if l["subject"] == subject && l["level"] == level && (threshold == 0 || l["threshold_days"] == threshold) {
				return
			}
		}
		t.Errorf("no %s %q line for %s (threshold %v):\n%s", level, msg, subject, threshold, g.output())
	}
	for subject, w := range want {
		check(subject, w.level, w.threshold)
	}
	for _, l := range g.all("certificate expires soon") {
		if l["subject"] == "origin-pull.cloudflare.net" {
			t.Error("the embedded Cloudflare CA (years left) was warned about")
		}
	}
	if _, err := fromAddr(t, "127.0.0.1", g.listen, p.clientTLS("localhost", leaf), "localhost", ""); err != nil {
		t.Fatal(err)
	}
	g.waitLog("request", 1)
	check("client expiring in 5 days", "warn", 14)
}

// TestCloudflareRangesRefresh: with cloudflare_ips_refresh the ranges are
// downloaded at start and a peer inside them is classified as Cloudflare;
// a download that lost most of the list is refused.
func TestCloudflareRangesRefresh(t *testing.T) {
	embedded, err := os.ReadFile(filepath.Join("..", "..", "cfips", "ranges.txt"))
	if err != nil {
		t.Fatal(err)
	}
	ranges := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/full":
			w.Write(embedded)
			io.WriteString(w, cloudflareAddr+"/32\n")
		case "/shrunk":
			io.WriteString(w, cloudflareAddr+"/32\n2606:4700::/32\n")
		}
	}))
	defer ranges.Close()
	for _, tc := range []struct {
		path, source, log string
	}{
		{"/full", "cloudflare", "Cloudflare's address ranges refreshed"},
		{"/shrunk", "other", "refreshing Cloudflare's address ranges failed; keeping the current list"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			p := newPKI(t)
			up := newUpstream(t)
			writeConfig(t, p.dir, `
upstream: `+up.URL+`
mode: log-only
zone_ca: zone-ca.pem
cloudflare_ips_refresh:
  urls: [`+ranges.URL+tc.path+`]
  interval: 1h
certificates:
  - cert: server.pem
    key: server.key
`)
			g := start(t, "--config", p.path("aopguard.yaml"))
			g.waitLog(tc.log, 1)
			if _, err := fromAddr(t, cloudflareAddr, g.listen, p.clientTLS("localhost", p.zoneLeaf), "localhost", ""); err != nil {
				t.Fatal(err)
			}
			if access := g.waitLog("request", 1)[0]; access["source"] != tc.source {
				t.Errorf("request from %s classified as %v, want %s", cloudflareAddr, access["source"], tc.source)
			}
		})
	}
}
