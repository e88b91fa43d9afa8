package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aopguard/aopguard/fleet"
	"github.com/aopguard/aopguard/internal/testpki"
	"github.com/aopguard/aopguard/rollout"
)

// freeAddr returns a 127.0.0.1 address nothing listens on (see freePort).
func freeAddr(t *testing.T) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(freePort(t))
}

// syncBuffer collects a child process's output safely.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startPrometheus runs Debian's prometheus on 127.0.0.1, scraping targets
// every second with deploy/prometheus/rules.yml loaded, and returns its URL.
func startPrometheus(t *testing.T, targets ...string) string {
	t.Helper()
	bin := tool(t, "prometheus", "/usr/bin/prometheus")
	rules, err := filepath.Abs("../../deploy/prometheus/rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	quoted, _ := json.Marshal(targets)
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: aopguard
    static_configs:
      - targets: %s
`, rules, quoted)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("prometheus output:\n%s", out.String())
		}
	})
	url := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := http.Get(url + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url
			}
		}
		select {
		case <-exited:
			t.Fatalf("prometheus exited:\n%s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready:\n%s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestFleetStatusFromPrometheus: two replicas behind one balancer saw
// different traffic. Each alone judges what it saw; the fleet report from
// a real Prometheus scraping both sums them, and one replica's failures
// make the host not ready.
func TestFleetStatusFromPrometheus(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t)
	p.write(t, "cf-ips.txt", []byte(cloudflareAddr+"/32\n"))
	writeConfig(t, p.dir, `
upstream: `+up.URL+`
mode: log-only
zone_ca: zone-ca.pem
cloudflare_ips: cf-ips.txt
ready_min_requests: 4
certificates:
  - cert: server.pem
    key: server.key
hosts:
  - name: app.example.com
    ca: host-ca.pem
`)
	good := start(t, "--config", p.path("aopguard.yaml"))
	bad := start(t, "--config", p.path("aopguard.yaml"))
	promURL := startPrometheus(t, good.admin, bad.admin)

	send := func(g *proc, host string, leaf *testpki.Cert, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			if _, err := fromAddr(t, cloudflareAddr, g.listen, p.clientTLS(host, leaf), host, ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Replica "good": only valid Cloudflare traffic. Replica "bad": the
	// zone is fine, but Cloudflare sends the zone certificate for the host.
	send(good, "localhost", p.zoneLeaf, 2)
	send(good, "app.example.com", p.hostLeaf, 4)
	send(bad, "localhost", p.zoneLeaf, 2)
	send(bad, "app.example.com", p.zoneLeaf, 2)
	good.waitLog("request", 6)
	bad.waitLog("request", 4)

	for _, c := range []struct {
		g        *proc
		zone     string
		host     string
		hostWhy  string
		exitCode int
	}{
		{good, rollout.NoTraffic, rollout.ReadyToEnforce, "all 4 requests", 1},
		{bad, rollout.NoTraffic, rollout.NotReady, "zone_cert_on_host 2", 1},
	} {
		rep := statusReport(t, c.g)
		if z, h := policyReport(t, rep, "_zone"), policyReport(t, rep, "app.example.com"); z.Verdict != c.zone || h.Verdict != c.host || !strings.Contains(h.Why, c.hostWhy) {
			t.Errorf("replica %s alone: zone %s, host %s (%s)", c.g.admin, z.Verdict, h.Verdict, h.Why)
		}
	}

	// The fleet: 4 zone requests (enough), 6 host requests of which 2 bad.
	var rep rollout.Report
	var out, stderr string
	deadline := time.Now().Add(30 * time.Second)
	for {
		var so, se bytes.Buffer
		cmd := exec.Command(binary, "status", "--prometheus", promURL, "--json", "-v")
		cmd.Stdout, cmd.Stderr = &so, &se
		err := cmd.Run()
		out, stderr = so.String(), se.String()
		ee, _ := err.(*exec.ExitError)
		rep = rollout.Report{} // decode afresh: omitted reasons must not keep an earlier poll's
		if (err == nil || ee != nil) && json.Unmarshal(so.Bytes(), &rep) == nil && len(rep.Policies) == 2 {
			z, h := policyReport(t, rep, "_zone"), policyReport(t, rep, "app.example.com")
			if z.Verdict == rollout.ReadyToEnforce && h.Verdict == rollout.NotReady && ee != nil && ee.ExitCode() == 1 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fleet report never reflected both replicas: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if rep.Replicas != 2 || rep.MinRequests != 4 {
		t.Errorf("replicas %d, min requests %d; want 2 and 4", rep.Replicas, rep.MinRequests)
	}
	host := policyReport(t, rep, "app.example.com")
	if !strings.Contains(host.Why, "2 requests from Cloudflare without a valid certificate") || !strings.Contains(host.Why, "zone_cert_on_host 2") ||
		host.Mode != "log-only" || len(host.CAs) != 1 || host.CAs[0].Subject != "app AOP CA" {
		t.Errorf("fleet host: %+v", host)
	}
	counts := map[string]uint64{}
	for _, c := range host.LastHour.By {
		counts[c.Result+"/"+c.Reason+"/"+c.Source] += c.Count
	}
	if counts["success//cloudflare"] != 4 || counts["failed/zone_cert_on_host/cloudflare"] != 2 || host.SinceStart.Total != 6 {
		t.Errorf("fleet host counts %v, since start %d; want 4 valid and 2 zone_cert_on_host", counts, host.SinceStart.Total)
	}
	for _, q := range []string{fleet.QueryPolicies, fleet.QueryLastHour} {
		if !strings.Contains(stderr, "query: "+q) {
			t.Errorf("-v does not print the query %s:\n%s", q, stderr)
		}
	}

	// The table says it is a fleet, and where the failing sources are.
	code, text := runCmd(t, exec.Command(binary, "status", "--prometheus", promURL))
	t.Logf("aopguard status --prometheus:\n%s", text)
	if code != 1 || !strings.Contains(text, "2 replicas summed by Prometheus") || !strings.Contains(text, "see each replica's /status") {
		t.Errorf("status --prometheus: exit %d:\n%s", code, text)
	}

	// A Prometheus without the rules (or without aopguard) is named as such.
	empty := startPrometheus(t, freeAddr(t))
	code, text = runCmd(t, exec.Command(binary, "status", "--prometheus", empty))
	if code != 1 || !strings.Contains(text, "deploy/prometheus/rules.yml") {
		t.Errorf("status against a Prometheus without aopguard: exit %d:\n%s", code, text)
	}
}
