//go:build soak

// The soak test: aopguard under mixed, hostile traffic for a bounded time
// while its upstream is killed and restarted and its configuration is
// reloaded, good and bad. Run it with `make soak`, or
//
//	go test -tags soak -run TestSoak -count=1 -timeout 15m -v ./cmd/aopguard
//
// AOPGUARD_SOAK_DURATION (default 90s) sets how long traffic runs;
// AOPGUARD_SOAK_REPORT names a file that receives the figures. Everything
// stays on loopback (127.0.0.0/8).
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aopguard/aopguard/certs"
	"github.com/aopguard/aopguard/internal/testpki"
)

const (
	soakDefaultDuration = 90 * time.Second
	soakOpTimeout       = 15 * time.Second // no client operation may take longer
	soakHandshake       = 3 * time.Second  // handshake_timeout in the soak's config
	soakReadHeader      = 2 * time.Second  // read_header_timeout in the soak's config
	soakReloadEvery     = 5 * time.Second
	soakKillEvery       = 10 * time.Second
	soakKillFor         = 2 * time.Second
	soakRecovery        = 30 * time.Second
	soakTagHeader       = "X-Soak-Client"
	// soakCutSlack is how much later than its timeout a slow client may be
	// cut: the soak shares two CPUs with itself (and with whatever else
	// runs), so the bound proves the timeout works, not its precision.
	soakCutSlack = 5 * time.Second
	// soakMaxConnections is max_connections, when aopguard has it: a few
	// times the soak's peak of concurrent connections, so that a leak of
	// connection slots shows in the capacity probe at the end.
	soakMaxConnections = 256
	soakCloudflareAddr = "127.0.0.2" // listed in cloudflare_ips
)

// soakReachable are the client classes allowed to reach an upstream: valid
// certificates for the policy their Host selects. Every other class (no
// certificate, rogue CA, a certificate for another policy, cross-host
// requests, oversized or never-finished headers) must never arrive.
var soakReachable = map[string]bool{"valid": true, "abort": true, "h2cancel": true, "h2rapid": true, "longsni": true}

func TestSoak(t *testing.T) {
	duration := soakDefaultDuration
	if v := os.Getenv("AOPGUARD_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("AOPGUARD_SOAK_DURATION=%q: want a positive duration such as 90s or 3m", v)
		}
		duration = d
	}
	wall := time.Now()
	s := newSoak(t)
	g := s.launch()
	s.listen = g.listen
	s.g = g
	t.Logf("aopguard pid %d serving %s (admin %s); read header timeout %s",
		g.cmd.Process.Pid, g.listen, g.admin, soakReadHeader)

	// Warm up every path once, let pooled connections go idle and close
	// (the upstreams close idle connections after 5s), then take the
	// baseline.
	s.warmUp()
	base := s.settle()
	baseStacks := s.goroutineStacks()
	t.Logf("baseline: goroutines %.0f, open fds %.0f, heap in use %s (allocated %s), RSS %s", base.gor, base.fds, mib(base.heap), mib(base.live), mib(base.rss))

	// Traffic.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	s.startClients(ctx, &wg)
	peak := base
	start := time.Now()
	end := start.Add(duration)
	nextSample, nextReload, nextKill := start.Add(time.Second), start.Add(soakReloadEvery), start.Add(3*time.Second)
	var restartAt time.Time
	tick := time.NewTicker(100 * time.Millisecond)
	for now := time.Now(); now.Before(end); now = time.Now() {
		select {
		case <-g.exited:
			stop()
			t.Fatalf("aopguard exited (code %d) %s into the soak; last output:\n%s", g.code, time.Since(start).Round(time.Second), g.tailText())
		case <-tick.C:
		}
		if !now.Before(nextSample) {
			nextSample = nextSample.Add(time.Second)
			if m, err := s.scrape(); err != nil {
				s.fail("admin", "/metrics unavailable during the soak: %v", err)
			} else {
				peak = peak.max(m)
			}
		}
		if !restartAt.IsZero() && !now.Before(restartAt) {
			s.ups["a"].restart(t)
			restartAt = time.Time{}
		}
		if !now.Before(nextKill) && restartAt.IsZero() {
			nextKill = nextKill.Add(soakKillEvery)
			s.ups["a"].kill()
			restartAt = time.Now().Add(soakKillFor)
		}
		if !now.Before(nextReload) {
			nextReload = time.Now().Add(soakReloadEvery)
			s.reload()
		}
	}
	tick.Stop()
	if !restartAt.IsZero() {
		s.ups["a"].restart(t)
	}
	stop()
	trafficTime := time.Since(start)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(soakOpTimeout + 15*time.Second):
		t.Fatalf("client workers did not stop within %s of the end: a client operation ignored its deadline", soakOpTimeout+15*time.Second)
	}
	s.closeClients()
	atStop, err := s.scrape()
	if err != nil {
		t.Fatalf("/metrics after the soak: %v", err)
	}
	peak = peak.max(atStop)

	// The process is up and still serves.
	select {
	case <-g.exited:
		t.Fatalf("aopguard exited (code %d) during the soak; last output:\n%s", g.code, g.tailText())
	default:
	}
	s.finalChecks()
	if n, ops := s.loadTimeouts.Load(), s.validOps.Load(); n*100 > ops {
		s.fail("valid", "%d of %d valid client operations had their handshake cut at handshake_timeout: more than 1%%", n, ops)
	}
	probe := s.capacityProbe()
	stopped := time.Now()

	// Recovery: goroutines and fds back near the baseline; heap after a
	// GC back near it too. Each poll scrapes /metrics, whose allocations
	// eventually start a GC in the otherwise idle process.
	gcRef, err := s.scrape()
	if err != nil {
		t.Fatalf("/metrics after the soak: %v", err)
	}
	final := gcRef
	recovered, gcRan := false, false
	deadline := time.Now().Add(soakRecovery)
	for time.Now().Before(deadline) {
		// Two GCs: sync.Pool contents survive the first. With the
		// profiler they are forced; without, each scrape's garbage
		// eventually starts one.
		s.forceGC()
		s.forceGC()
		m, err := s.scrape()
		if err != nil {
			t.Fatalf("/metrics after the soak: %v", err)
		}
		final = m
		recovered = m.gor <= base.gor+10 && m.fds <= base.fds+10
		gcRan = m.gc >= gcRef.gc+2
		if recovered && gcRan {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	recoveryTime := time.Since(stopped)
	extra := stackDiff(baseStacks, s.goroutineStacks())
	if final.gor > base.gor+10 {
		s.fail("recovery", "goroutines did not return to baseline within %s: baseline %.0f, now %.0f (peak %.0f); above baseline:\n%s", soakRecovery, base.gor, final.gor, peak.gor, extra)
	}
	if final.fds > base.fds+10 {
		s.fail("recovery", "open file descriptors did not return to baseline within %s: baseline %.0f, now %.0f (peak %.0f)", soakRecovery, base.fds, final.fds, peak.fds)
	}
	heapNote := "after two forced GCs"
	if gcRan {
		if limit := max(2*base.heap, base.heap+32<<20); final.heap > limit {
			s.fail("recovery", "heap in use after two GCs is %s, baseline %s: more than max(2×baseline, baseline+32 MiB)", mib(final.heap), mib(base.heap))
		}
	} else {
		heapNote = "fewer than two GCs ran after the traffic stopped; checked within 64 MiB of baseline"
		if final.heap > base.heap+64<<20 {
			s.fail("recovery", "heap in use %s, baseline %s: more than 64 MiB above it", mib(final.heap), mib(base.heap))
		}
	}
	if resp, err := s.admin.Get("http://" + g.admin + "/healthz"); err != nil {
		s.fail("recovery", "/healthz after the soak: %v", err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || strings.TrimSpace(string(b)) != "ok" {
			s.fail("recovery", "/healthz after the soak: %d %q", resp.StatusCode, b)
		}
	}
	select {
	case <-g.exited:
		t.Fatalf("aopguard exited (code %d) after the soak; last output:\n%s", g.code, g.tailText())
	default:
	}

	var notes string
	if probe != "" {
		notes += probe + "\n"
	}
	if extra != "" {
		notes += "goroutines above the baseline after recovery (by stack):\n" + extra
	}
	report := s.summary(duration, trafficTime, time.Since(wall), recoveryTime, base, peak, final, heapNote, notes)
	t.Log("\n" + report)
	if path := os.Getenv("AOPGUARD_SOAK_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(report), 0o644); err != nil {
			t.Errorf("writing AOPGUARD_SOAK_REPORT: %v", err)
		}
	}
	s.report()
}

// soak is the shared state of one soak run.
type soak struct {
	t          *testing.T
	p          *pki
	dir        string
	cfgPath    string
	listen     string
	g          *soakProc
	admin      *http.Client
	targets    map[string]*target
	ups        map[string]*soakUpstream
	serverPool *x509.CertPool
	longSNI    string
	hellos     map[string][]byte // captured ClientHellos by name

	// Leaves that some policy refuses.
	zoneLeaf, leafA, leafB, expiredA, serverUsageA *testpki.Cert

	// Reloads, done by the test goroutine only.
	variant     int // the running good config
	reloads     int
	goodReloads int
	badReloads  int
	reloadTimes []time.Duration
	badKinds    map[string]int

	clientsMu        sync.Mutex
	clientTransports []*http.Transport

	seq                atomic.Int64 // numbers requests for their tags
	resumed, handshake atomic.Int64 // TLS sessions of new-connection clients
	validOps           atomic.Int64 // operations by valid clients
	loadTimeouts       atomic.Int64 // valid handshakes aopguard cut at handshake_timeout

	// Outcomes.
	mu        sync.Mutex
	counts    map[string]map[string]int // by kind and outcome
	failures  map[string][]string       // the first few of each kind
	nfail     int
	slowCut   map[string]time.Duration // longest time until a slow client was cut, by kind
	latencies []time.Duration          // of valid requests answered 200
}

// target is one policy the valid clients talk to.
type target struct {
	name   string // zone, a, b
	sni    string
	host   string
	leaves []*testpki.Cert
	up     *soakUpstream
}

func newSoak(t *testing.T) *soak {
	p := newPKI(t)
	s := &soak{t: t, p: p, dir: p.dir, counts: map[string]map[string]int{}, failures: map[string][]string{}, slowCut: map[string]time.Duration{},
		badKinds: map[string]int{}, hellos: map[string][]byte{}}
	s.admin = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1}}

	// PKI: the zone CA and A's CA come from newPKI; B gets its own, and a
	// spare CA joins B's bundle in the second config variant.
	caA, caB, caSpare := p.hostCA, testpki.CA(t, "b AOP CA"), testpki.CA(t, "spare CA")
	s.zoneLeaf, s.leafA = p.zoneLeaf, p.hostLeaf
	zoneLeaf2 := testpki.Client(t, p.zoneCA, "cloudflare zone client 2")
	leafA2 := testpki.Client(t, caA, "a.example.com 2")
	s.leafB = testpki.Client(t, caB, "b.example.com")
	leafB2 := testpki.Client(t, caB, "b.example.com 2")
	s.expiredA = testpki.New(t, caA, testpki.Options{CN: "a.example.com expired", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	s.serverUsageA = testpki.New(t, caA, testpki.Options{CN: "a.example.com server usage", EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	server := testpki.Server(t, p.serverCA, "a.example.com", "b.example.com", "localhost", "127.0.0.1")
	s.serverPool = testpki.Pool(p.serverCA)
	p.write(t, "soak-server.pem", server.CertPEM())
	p.write(t, "soak-server.key", server.KeyPEM())
	p.write(t, "a-ca.pem", caA.CertPEM())
	p.write(t, "b-ca.pem", caB.CertPEM())
	p.write(t, "b-ca-bundle.pem", testpki.Bundle(caSpare, caB))
	p.write(t, "garbage.pem", []byte("this is not PEM at all\n"))
	half := caB.CertPEM()
	p.write(t, "half.pem", half[:len(half)/2])
	p.write(t, "other.key", leafB2.KeyPEM())
	p.write(t, "cf-ips.txt", []byte("# soak: plays Cloudflare\n"+soakCloudflareAddr+"/32\n"))

	s.ups = map[string]*soakUpstream{}
	for _, name := range []string{"zone", "a", "b"} {
		s.ups[name] = newSoakUpstream(t, name)
	}
	s.ups["zone"].allow(p.zoneLeaf, zoneLeaf2)
	s.ups["a"].allow(s.leafA, leafA2)
	s.ups["b"].allow(s.leafB, leafB2)
	s.targets = map[string]*target{
		"zone": {name: "zone", sni: "localhost", host: "localhost", leaves: []*testpki.Cert{p.zoneLeaf, zoneLeaf2}, up: s.ups["zone"]},
		"a":    {name: "a", sni: "a.example.com", host: "a.example.com", leaves: []*testpki.Cert{s.leafA, leafA2}, up: s.ups["a"]},
		"b":    {name: "b", sni: "b.example.com", host: "b.example.com", leaves: []*testpki.Cert{s.leafB, leafB2}, up: s.ups["b"]},
	}

	// The 5,000-character server name: DNS-shaped labels of at most 63.
	var b strings.Builder
	for b.Len() < 5000-len(".example.com")-64 {
		b.WriteString(strings.Repeat("q", 63) + ".")
	}
	b.WriteString(strings.Repeat("q", 5000-len(".example.com")-b.Len()))
	b.WriteString(".example.com")
	s.longSNI = b.String()
	if len(s.longSNI) != 5000 {
		t.Fatalf("long SNI is %d characters", len(s.longSNI))
	}
	s.captureHellos()
	s.cfgPath = filepath.Join(s.dir, "aopguard.yaml")
	s.writeConfig(s.configText(0))
	return s
}

// configText is one of the two good configurations the reloads alternate
// between. They admit exactly the same clients (the second reorders the
// hosts and adds an unused CA to B's bundle), so every assertion holds
// under both, but every reload compiles new policies, so requests on open
// connections take the re-check path.
func (s *soak) configText(variant int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "upstream: http://%s\nmode: require\nzone_ca: zone-ca.pem\ncloudflare_ips: cf-ips.txt\n", s.ups["zone"].addr)
	fmt.Fprintf(&b, "handshake_timeout: %s\nupstream_timeout: 10s\nshutdown_timeout: 5s\n", soakHandshake)
	b.WriteString("certificates:\n  - cert: soak-server.pem\n    key: soak-server.key\n")
	hostA := fmt.Sprintf("  - name: a.example.com\n    ca: a-ca.pem\n    upstream: http://%s\n", s.ups["a"].addr)
	hostB := fmt.Sprintf("  - name: b.example.com\n    ca: b-ca.pem\n    upstream: http://%s\n", s.ups["b"].addr)
	if variant == 1 {
		hostB = fmt.Sprintf("  - name: b.example.com\n    mode: require\n    upstream: http://%s\n    ca: b-ca-bundle.pem\n", s.ups["b"].addr)
		b.WriteString("ready_min_requests: 50\nhosts:\n" + hostB + hostA)
	} else {
		b.WriteString("hosts:\n" + hostA + hostB)
	}
	fmt.Fprintf(&b, "max_connections: %d\nmax_handshakes: 128\n", soakMaxConnections)
	fmt.Fprintf(&b, "read_header_timeout: %s\nidle_timeout: 30s\n", soakReadHeader)
	return b.String()
}

func (s *soak) writeConfig(text string) {
	if err := os.WriteFile(s.cfgPath, []byte(text), 0o600); err != nil {
		s.t.Fatal(err)
	}
}

// badConfigs are rejected by a reload; the running configuration must keep
// serving.
var badConfigs = []struct {
	name  string
	apply func(good string) string
}{
	{"garbage CA file", func(good string) string { return strings.Replace(good, "a-ca.pem", "garbage.pem", 1) }},
	{"half-written CA bundle", func(good string) string { return strings.Replace(good, "zone_ca: zone-ca.pem", "zone_ca: half.pem", 1) }},
	{"bad YAML", func(good string) string { return good + "hosts: [unclosed\n" }},
	{"missing CA file", func(good string) string { return strings.Replace(good, "b-ca", "absent-b-ca", 1) }},
	{"certificate/key mismatch", func(good string) string { return strings.Replace(good, "soak-server.key", "other.key", 1) }},
}

// reload sends SIGHUP: every fourth time with a broken configuration
// (which must be refused; the good one is then put back and reloaded),
// otherwise with the other good variant. aopguard may also reload by
// itself when it sees the file change; the checks allow for that.
func (s *soak) reload() {
	s.reloads++
	if s.reloads%4 != 0 {
		if s.sighup(s.configText(1-s.variant), true, "") {
			s.variant = 1 - s.variant
		}
		return
	}
	bc := badConfigs[(s.reloads/4-1)%len(badConfigs)]
	good := s.configText(s.variant)
	s.sighup(bc.apply(good), false, bc.name)
	s.sighup(good, true, "")
}

// sighup writes text to the config file, sends SIGHUP and checks the
// outcome; it reports whether the reload took effect.
func (s *soak) sighup(text string, wantOK bool, badName string) bool {
	s.writeConfig(text)
	okBefore, failBefore := s.g.reloadOK.Load(), s.g.reloadFail.Load()
	t0 := time.Now()
	if err := s.g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		s.t.Fatalf("SIGHUP: %v", err)
	}
	outcome := ""
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && outcome == ""; time.Sleep(5 * time.Millisecond) {
		switch {
		case s.g.reloadOK.Load() > okBefore:
			outcome = "ok"
		case s.g.reloadFail.Load() > failBefore:
			outcome = "failed"
		}
	}
	s.reloadTimes = append(s.reloadTimes, time.Since(t0))
	switch {
	case outcome == "":
		s.fail("reload", "no reload outcome logged within 10s of SIGHUP")
	case !wantOK && outcome == "ok":
		s.fail("reload", "broken configuration (%s) was accepted", badName)
	case wantOK && outcome == "failed":
		s.fail("reload", "good configuration was refused")
	case !wantOK:
		s.badReloads++
		s.badKinds[badName]++
	default:
		s.goodReloads++
	}
	return outcome == "ok"
}

// warmUp sends a few requests down every valid path.
func (s *soak) warmUp() {
	for _, tg := range s.targets {
		for _, mode := range []string{"h1-keepalive", "h2-keepalive", "new-connection"} {
			tr := s.validTransport(tg, mode, tg.leaves[0])
			c := &http.Client{Transport: tr}
			for i := 0; i < 3; i++ {
				s.validRequest(c, tg, "valid/"+tg.name+"/warm-up", "/", mode)
			}
			tr.CloseIdleConnections()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nfail > 0 {
		s.t.Fatalf("warm-up failed: %v", s.failures)
	}
}

// settle waits until pooled connections have closed and the goroutine
// count is steady, and returns that state as the baseline.
func (s *soak) settle() sample {
	time.Sleep(6 * time.Second) // upstream idle timeout is 5s
	var last sample
	for i := 0; i < 20; i++ {
		m, err := s.scrape()
		if err != nil {
			s.t.Fatalf("/metrics: %v", err)
		}
		if i > 0 && m.gor == last.gor && m.fds == last.fds {
			if s.forceGC() && s.forceGC() {
				if m2, err := s.scrape(); err == nil {
					m = m2
				}
			}
			return m
		}
		last = m
		time.Sleep(time.Second)
	}
	return last
}

// finalChecks run after the traffic: every path still works, the
// counters agree with what was done, and nothing was let through that
// require mode refuses.
func (s *soak) finalChecks() {
	for _, tg := range s.targets {
		tr := s.validTransport(tg, "h2-keepalive", tg.leaves[0])
		s.validRequest(&http.Client{Transport: tr}, tg, "valid/"+tg.name+"/after-soak", "/", "h2-keepalive")
		tr.CloseIdleConnections()
	}
	body, err := s.metricsBody()
	if err != nil {
		s.fail("final", "/metrics: %v", err)
		return
	}
	// The counters agree with the log (aopguard may have reloaded by
	// itself on seeing the file change, so they may exceed our SIGHUPs).
	okLogged, failLogged := s.g.reloadOK.Load(), s.g.reloadFail.Load()
	if v := metricValue(body, `aopguard_config_reloads_total{result="success"}`); v != float64(1+okLogged) || okLogged < int64(s.goodReloads) {
		s.fail("final", "aopguard_config_reloads_total{result=\"success\"} = %v; %d reloads logged complete; %d good SIGHUP reloads", v, okLogged, s.goodReloads)
	}
	if v := max(metricValue(body, `aopguard_config_reloads_total{result="failure"}`), 0); v != float64(failLogged) || failLogged < int64(s.badReloads) {
		s.fail("final", "aopguard_config_reloads_total{result=\"failure\"} = %v; %d reloads logged failed; %d bad SIGHUP reloads", v, failLogged, s.badReloads)
	}
	// In require mode a verification is either a success that is allowed
	// or a refusal; never an allowed failure, never a would_reject.
	for _, l := range strings.Split(body, "\n") {
		if !strings.HasPrefix(l, "aopguard_client_cert_verifications_total{") || strings.HasSuffix(l, " 0") {
			continue
		}
		if strings.Contains(l, `action="would_reject"`) || (strings.Contains(l, `action="allow"`) && !strings.Contains(l, `result="success"`)) {
			s.fail("final", "require mode let a failing certificate through: %s", l)
		}
		if !strings.Contains(l, `mode="require"`) {
			s.fail("final", "verification under a mode other than require: %s", l)
		}
	}
	// aopguard's upstream error counter agrees with what the clients saw:
	// at least every 502/504 answered for A, and none for the upstreams
	// that were never killed.
	var seen502 int
	s.mu.Lock()
	for k, m := range s.counts {
		if strings.HasPrefix(k, "valid/a/") {
			seen502 += m["502-upstream-down"] + m["504-upstream-down"]
		}
	}
	s.mu.Unlock()
	var counted502 float64
	for _, l := range strings.Split(body, "\n") {
		if !strings.HasPrefix(l, "aopguard_upstream_errors_total{") {
			continue
		}
		v, _ := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
		switch {
		case strings.Contains(l, `host="a.example.com"`):
			counted502 += v
		case v > 0:
			s.fail("final", "upstream errors for an upstream that was never killed: %s", l)
		}
	}
	if counted502 < float64(seen502) {
		s.fail("final", "aopguard_upstream_errors_total for a.example.com is %v, but clients saw %d answers 502/504", counted502, seen502)
	}
	// Label values never come from what clients send.
	if strings.Contains(body, strings.Repeat("q", 32)) || strings.Contains(body, "soak-client") {
		s.fail("final", "client-supplied text (the long SNI) became a metric label")
	}
	for _, u := range s.ups {
		u.mu.Lock()
		for _, v := range u.violations {
			s.fail("upstream", "%s", v)
		}
		u.mu.Unlock()
	}
	s.g.mu.Lock()
	for _, n := range s.g.notable {
		s.fail("aopguard-log", "%s", n)
	}
	s.g.mu.Unlock()
}

// --- outcomes ---

func (s *soak) count(kind, outcome string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.counts[kind]
	if m == nil {
		m = map[string]int{}
		s.counts[kind] = m
	}
	m[outcome]++
}

// fail records a failure of kind; the test reports them all at the end.
func (s *soak) fail(kind, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.counts[kind]
	if m == nil {
		m = map[string]int{}
		s.counts[kind] = m
	}
	m["FAILED"]++
	s.nfail++
	if len(s.failures[kind]) < 5 {
		s.failures[kind] = append(s.failures[kind], msg)
	}
}

func (s *soak) noteCut(kind string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d > s.slowCut[kind] {
		s.slowCut[kind] = d
	}
}

func (s *soak) report() {
	s.mu.Lock()
	defer s.mu.Unlock()
	kinds := make([]string, 0, len(s.failures))
	for k := range s.failures {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		for _, f := range s.failures[k] {
			s.t.Errorf("%s: %s", k, f)
		}
		if n := s.counts[k]["FAILED"]; n > len(s.failures[k]) {
			s.t.Errorf("%s: … and %d more", k, n-len(s.failures[k]))
		}
	}
	if s.nfail > 0 {
		s.t.Logf("aopguard's last log lines:\n%s", s.g.tailText())
	}
}

func (s *soak) summary(duration, traffic, wall, recovery time.Duration, base, peak, final sample, heapNote, notes string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "aopguard soak: traffic %s (AOPGUARD_SOAK_DURATION %s), whole test %s, recovery %s\n",
		traffic.Round(time.Second), duration, wall.Round(time.Second), recovery.Round(100*time.Millisecond))
	b.WriteString("\n")
	b.WriteString("client operations by kind and outcome:\n")
	kinds := make([]string, 0, len(s.counts))
	total, totalFailed := 0, 0
	for k := range s.counts {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		outs := make([]string, 0, len(s.counts[k]))
		for o := range s.counts[k] {
			outs = append(outs, o)
		}
		sort.Strings(outs)
		parts := make([]string, 0, len(outs))
		for _, o := range outs {
			n := s.counts[k][o]
			total += n
			if o == "FAILED" {
				totalFailed += n
			}
			parts = append(parts, fmt.Sprintf("%s=%d", o, n))
		}
		fmt.Fprintf(&b, "  %-34s %s\n", k, strings.Join(parts, " "))
	}
	fmt.Fprintf(&b, "  total %d operations, %d failed\n\n", total, totalFailed)
	b.WriteString("requests that reached the upstreams (by client class):\n")
	for _, name := range []string{"zone", "a", "b"} {
		u := s.ups[name]
		u.mu.Lock()
		cls := make([]string, 0, len(u.hits))
		for k := range u.hits {
			cls = append(cls, k)
		}
		sort.Strings(cls)
		parts := make([]string, 0, len(cls))
		sum := 0
		for _, k := range cls {
			parts = append(parts, fmt.Sprintf("%s=%d", k, u.hits[k]))
			sum += u.hits[k]
		}
		fmt.Fprintf(&b, "  upstream %-4s %6d  %s; policy violations %d\n", name, sum, strings.Join(parts, " "), u.nviol)
		if name == "a" {
			fmt.Fprintf(&b, "                killed and restarted %d times (%s down each)\n", len(u.downs), soakKillFor)
		}
		u.mu.Unlock()
	}
	var maxReload time.Duration
	for _, d := range s.reloadTimes {
		maxReload = max(maxReload, d)
	}
	badKinds := make([]string, 0, len(s.badKinds))
	for k, n := range s.badKinds {
		badKinds = append(badKinds, fmt.Sprintf("%s×%d", k, n))
	}
	sort.Strings(badKinds)
	s.g.mu.Lock()
	triggers := make([]string, 0, len(s.g.triggers))
	for k, n := range s.g.triggers {
		triggers = append(triggers, fmt.Sprintf("%s×%d", k, n))
	}
	s.g.mu.Unlock()
	sort.Strings(triggers)
	fmt.Fprintf(&b, "\nreloads by SIGHUP: %d good, %d bad (refused, kept serving: %s); slowest outcome %s\n",
		s.goodReloads, s.badReloads, strings.Join(badKinds, ", "), maxReload.Round(time.Millisecond))
	fmt.Fprintf(&b, "reloads logged by aopguard: %d complete, %d failed; triggers: %s\n",
		s.g.reloadOK.Load(), s.g.reloadFail.Load(), strings.Join(triggers, ", "))
	if n := len(s.latencies); n > 0 {
		l := append([]time.Duration{}, s.latencies...)
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
		fmt.Fprintf(&b, "valid requests answered 200: latency p50 %s, p99 %s, max %s (%d requests)\n",
			l[n/2].Round(100*time.Microsecond), l[n*99/100].Round(100*time.Microsecond), l[n-1].Round(time.Millisecond), n)
	}
	fmt.Fprintf(&b, "valid client operations %d; handshakes aopguard cut at handshake_timeout (CPU starvation) %d\n", s.validOps.Load(), s.loadTimeouts.Load())
	fmt.Fprintf(&b, "TLS sessions resumed by new-connection clients: %d of %d handshakes\n", s.resumed.Load(), s.handshake.Load())
	cut := make([]string, 0, len(s.slowCut))
	for k, d := range s.slowCut {
		cut = append(cut, fmt.Sprintf("%s %s", k, d.Round(100*time.Millisecond)))
	}
	sort.Strings(cut)
	fmt.Fprintf(&b, "slow clients cut after at most: %s (handshake_timeout %s, read header timeout %s)\n\n",
		strings.Join(cut, ", "), soakHandshake, soakReadHeader)
	fmt.Fprintf(&b, "aopguard process      %12s %12s %12s\n", "baseline", "peak", "final")
	fmt.Fprintf(&b, "  goroutines          %12.0f %12.0f %12.0f\n", base.gor, peak.gor, final.gor)
	fmt.Fprintf(&b, "  open fds            %12.0f %12.0f %12.0f\n", base.fds, peak.fds, final.fds)
	fmt.Fprintf(&b, "  heap in use         %12s %12s %12s  (final %s)\n", mib(base.heap), mib(peak.heap), mib(final.heap), heapNote)
	fmt.Fprintf(&b, "  heap allocated      %12s %12s %12s  (live objects, at baseline and final after GC)\n", mib(base.live), mib(peak.live), mib(final.live))
	fmt.Fprintf(&b, "  RSS                 %12s %12s %12s\n", mib(base.rss), mib(peak.rss), mib(final.rss))
	b.WriteString("\naopguard log lines by message (top 12):\n")
	s.g.mu.Lock()
	type mc struct {
		m string
		n int
	}
	var msgs []mc
	for m, n := range s.g.msgs {
		msgs = append(msgs, mc{m, n})
	}
	s.g.mu.Unlock()
	sort.Slice(msgs, func(i, j int) bool { return msgs[i].n > msgs[j].n || (msgs[i].n == msgs[j].n && msgs[i].m < msgs[j].m) })
	for i, x := range msgs {
		if i == 12 {
			break
		}
		m := x.m
		if len(m) > 90 {
			m = m[:90] + "…"
		}
		fmt.Fprintf(&b, "  %8d  %s\n", x.n, m)
	}
	if notes != "" {
		b.WriteString("\n" + notes)
	}
	fmt.Fprintf(&b, "\nfailures: %d\n", s.nfail)
	return b.String()
}

func mib(v float64) string { return fmt.Sprintf("%.1f MiB", v/(1<<20)) }

// --- metrics ---

// sample is one reading of aopguard's runtime and process metrics: heap is
// go_memstats_heap_inuse_bytes, live go_memstats_heap_alloc_bytes.
type sample struct{ gor, fds, heap, live, rss, gc float64 }

func (a sample) max(b sample) sample {
	return sample{max(a.gor, b.gor), max(a.fds, b.fds), max(a.heap, b.heap), max(a.live, b.live), max(a.rss, b.rss), max(a.gc, b.gc)}
}

// forceGC makes aopguard collect garbage, through the profiler's
// /debug/pprof/heap?gc=1, when it serves it; it reports whether it could.
func (s *soak) forceGC() bool {
	resp, err := s.admin.Get("http://" + s.g.admin + "/debug/pprof/heap?gc=1")
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == 200
}

func (s *soak) metricsBody() (string, error) {
	resp, err := s.admin.Get("http://" + s.g.admin + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return string(b), err
}

func (s *soak) scrape() (sample, error) {
	body, err := s.metricsBody()
	if err != nil {
		return sample{}, err
	}
	m := sample{
		gor:  metricValue(body, "go_goroutines"),
		fds:  metricValue(body, "process_open_fds"),
		heap: metricValue(body, "go_memstats_heap_inuse_bytes"),
		live: metricValue(body, "go_memstats_heap_alloc_bytes"),
		rss:  metricValue(body, "process_resident_memory_bytes"),
		gc:   metricValue(body, "go_gc_duration_seconds_count"),
	}
	if m.gor == 0 || m.fds == 0 || m.heap == 0 || m.rss == 0 {
		return m, fmt.Errorf("runtime or process metrics missing from /metrics")
	}
	return m, nil
}

// metricValue returns the value of one exact series (-1 when absent).
func metricValue(body, series string) float64 {
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// capacityProbe checks, when aopguard bounds connections, that every slot
// the soak's connections took was given back: it holds max_connections-16
// idle keep-alive connections open and then asks for one more request,
// which must be answered at once. Connection slots are not visible in the
// metrics; a leak would only show as a refusal to accept, here.
func (s *soak) capacityProbe() string {
	n := soakMaxConnections - 16
	tg := s.targets["zone"]
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	var trs []*soakTransport
	for i := 0; i < n; i++ {
		tr := s.validTransport(tg, "h1-keepalive", tg.leaves[i%2])
		trs = append(trs, tr)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s.validRequest(&http.Client{Transport: tr}, tg, "valid/zone/capacity-probe-idle", "/", "h1-keepalive")
		}()
	}
	wg.Wait()
	t0 := time.Now()
	probe := s.validTransport(tg, "new-connection", nil)
	s.validRequest(&http.Client{Transport: probe}, tg, "valid/zone/capacity-probe", "/", "new-connection")
	took := time.Since(t0)
	m, _ := s.scrape()
	for _, tr := range append(trs, probe) {
		tr.CloseIdleConnections()
	}
	return fmt.Sprintf("capacity probe: %d idle keep-alive connections held open (aopguard: %.0f fds, %.0f goroutines), then a new connection answered in %s (max_connections %d)",
		n, m.fds, m.gor, took.Round(time.Millisecond), soakMaxConnections)
}

// goroutineStacks returns aopguard's goroutines grouped by stack (count
// by the functions on it), when it serves /debug/pprof.
func (s *soak) goroutineStacks() map[string]int {
	resp, err := s.admin.Get("http://" + s.g.admin + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := map[string]int{}
	for _, block := range strings.Split(string(body), "\n\n") {
		lines := strings.Split(strings.TrimSpace(block), "\n")
		n := 0
		if _, err := fmt.Sscanf(lines[0], "%d @", &n); err != nil {
			continue
		}
		var funcs []string
		for _, l := range lines[1:] {
			f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(l), "#"))
			if len(f) >= 2 {
				funcs = append(funcs, f[1])
			}
		}
		if len(funcs) > 6 {
			funcs = funcs[:6]
		}
		if len(funcs) > 0 {
			out[strings.Join(funcs, " < ")] += n
		}
	}
	return out
}

// stackDiff lists the stacks with more goroutines in after than in before.
func stackDiff(before, after map[string]int) string {
	var lines []string
	for k, n := range after {
		if d := n - before[k]; d > 0 {
			lines = append(lines, fmt.Sprintf("  %+d  %s\n", d, k))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "")
}

// --- upstreams ---

// soakUpstream is an app behind aopguard that can be killed and restarted
// on the same port. It checks every request it receives: the Host must be
// its own, the verification headers aopguard's verdict for one of its
// policy's leaves, and the client class one that may reach an upstream.
type soakUpstream struct {
	name string
	addr string
	host string // "" for the zone: any name but a. and b.example.com
	fps  map[string]bool

	mu         sync.Mutex
	srv        *http.Server
	downs      [][2]time.Time // kill and restart times
	hits       map[string]int // by client class
	violations []string
	nviol      int
}

func newSoakUpstream(t *testing.T, name string) *soakUpstream {
	u := &soakUpstream{name: name, fps: map[string]bool{}, hits: map[string]int{}}
	if name != "zone" {
		u.host = name + ".example.com"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.addr = ln.Addr().String()
	u.serve(ln)
	t.Cleanup(func() {
		u.mu.Lock()
		defer u.mu.Unlock()
		if u.srv != nil {
			u.srv.Close()
		}
	})
	return u
}

func (u *soakUpstream) allow(leaves ...*testpki.Cert) {
	for _, l := range leaves {
		u.fps[certs.Fingerprint(l.Cert.Raw)] = true
	}
}

func (u *soakUpstream) serve(ln net.Listener) {
	srv := &http.Server{
		Handler:           http.HandlerFunc(u.handle),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       5 * time.Second, // like many app servers: pooled connections do not linger
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	u.srv = srv
	go srv.Serve(ln)
}

// kill closes the listener and every connection, in-flight ones included.
func (u *soakUpstream) kill() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.srv.Close()
	u.srv = nil
	u.downs = append(u.downs, [2]time.Time{time.Now()})
}

// restart listens on the same port again.
func (u *soakUpstream) restart(t *testing.T) {
	var ln net.Listener
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if ln, err = net.Listen("tcp", u.addr); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("restarting upstream %s on %s: %v", u.name, u.addr, err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.serve(ln)
	u.downs[len(u.downs)-1][1] = time.Now()
}

// downDuring reports whether the upstream was down at some point of
// [from, to], with a margin for requests already on their way.
func (u *soakUpstream) downDuring(from, to time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, d := range u.downs {
		if d[0].Add(-100*time.Millisecond).Before(to) && (d[1].IsZero() || d[1].Add(time.Second).After(from)) {
			return true
		}
	}
	return false
}

func (u *soakUpstream) handle(w http.ResponseWriter, r *http.Request) {
	tag := r.Header.Get(soakTagHeader)
	class, _, _ := strings.Cut(tag, "/")
	host := strings.ToLower(r.Host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(host, ".")
	var bad []string
	switch {
	case u.host != "" && host != u.host:
		bad = append(bad, fmt.Sprintf("Host %q on the upstream of %s", r.Host, u.host))
	case u.host == "" && (host == "a.example.com" || host == "b.example.com"):
		bad = append(bad, fmt.Sprintf("Host %q on the zone's upstream", r.Host))
	}
	if v := r.Header.Values("X-Client-Verify"); len(v) != 1 || v[0] != "SUCCESS" {
		bad = append(bad, fmt.Sprintf("X-Client-Verify %q", v))
	}
	if v := r.Header.Values("X-Client-Cert-Fingerprint"); len(v) != 1 || !u.fps[v[0]] {
		bad = append(bad, fmt.Sprintf("fingerprint %q is not a leaf of this policy's CA", v))
	}
	for k := range r.Header {
		norm := strings.ReplaceAll(strings.ToLower(k), "_", "-")
		if (norm == "x-client-verify" || strings.HasPrefix(norm, "x-client-cert-")) && k != "X-Client-Verify" && k != "X-Client-Cert-Fingerprint" {
			bad = append(bad, fmt.Sprintf("client-supplied header %q reached the app", k))
		}
	}
	if !soakReachable[class] {
		bad = append(bad, fmt.Sprintf("client class %q must never reach an upstream", class))
	}
	u.mu.Lock()
	if class == "" {
		class = "(untagged)"
	}
	u.hits[class]++
	if len(bad) > 0 {
		u.nviol++
		if len(u.violations) < 20 {
			u.violations = append(u.violations, fmt.Sprintf("upstream %s got %s %s (tag %q): %s", u.name, r.Method, r.URL.Path, tag, strings.Join(bad, "; ")))
		}
	}
	u.mu.Unlock()

	w.Header().Set("X-Soak-Upstream", u.name)
	w.Header().Set("X-Upstream-Saw-Client-Verify", r.Header.Get("X-Client-Verify"))
	w.Header().Set("X-Upstream-Saw-Fingerprint", r.Header.Get("X-Client-Cert-Fingerprint"))
	switch r.URL.Path {
	case "/sleep":
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-r.Context().Done():
			return
		}
	case "/bytes":
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Length", strconv.Itoa(n+len("ok \n")+len(u.name)))
		chunk := bytes.Repeat([]byte("x"), 32<<10)
		for n > 0 {
			k := min(n, len(chunk))
			if _, err := w.Write(chunk[:k]); err != nil {
				return
			}
			n -= k
		}
	}
	fmt.Fprintf(w, "ok %s\n", u.name)
}

// --- the aopguard process ---

// soakProc runs aopguard at debug level and reads its log as a stream:
// the harness's proc keeps every parsed line, which a soak cannot afford.
// It counts lines by message, keeps the last ones, and keeps any line that
// signals trouble (a panic, an error other than an expected failed reload,
// output that is not JSON).
type soakProc struct {
	cmd           *exec.Cmd
	listen, admin string
	exited        chan struct{}
	code          int
	ready         chan struct{}

	reloadOK, reloadFail atomic.Int64

	mu       sync.Mutex
	hsFailed map[string]string // remote address -> error, for failed handshakes from soakCloudflareAddr
	msgs     map[string]int
	triggers map[string]int // reloads by trigger (SIGHUP, file change…)
	notable  []string
	tail     []string
	tailNext int
}

var addrPattern = regexp.MustCompile(`\d+\.\d+\.\d+\.\d+:\d+`)

const reloadFailedMsg = "reload failed; still serving the previous configuration"

func (s *soak) launch() *soakProc {
	t := s.t
	g := &soakProc{exited: make(chan struct{}), ready: make(chan struct{}), msgs: map[string]int{}, triggers: map[string]int{}, hsFailed: map[string]string{}}
	args := []string{"run", "--config", s.cfgPath, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--log-level", "debug", "--admin-pprof"}
	g.cmd = exec.Command(binary, args...)
	stderr, err := g.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		br := bufio.NewReaderSize(stderr, 1<<16)
		for {
			line, err := br.ReadBytes('\n')
			if len(line) > 0 {
				g.line(line)
			}
			if err != nil {
				break
			}
		}
		err := g.cmd.Wait()
		if ee, ok := err.(*exec.ExitError); ok {
			g.code = ee.ExitCode()
		}
		close(g.exited)
	}()
	t.Cleanup(func() {
		g.cmd.Process.Kill()
		<-g.exited
	})
	select {
	case <-g.ready:
	case <-g.exited:
		t.Fatalf("aopguard exited with %d before serving:\n%s", g.code, g.tailText())
	case <-time.After(20 * time.Second):
		t.Fatalf("aopguard did not start:\n%s", g.tailText())
	}
	return g
}

func (g *soakProc) line(line []byte) {
	line = bytes.TrimRight(line, "\r\n")
	msg, isJSON := jsonString(line, "message")
	switch msg {
	case "aopguard serving":
		var m map[string]any
		if json.Unmarshal(line, &m) == nil {
			g.listen, _ = m["listen"].(string)
			g.admin, _ = m["admin"].(string)
			close(g.ready)
		}
	case "reload complete":
		g.reloadOK.Add(1)
	case reloadFailedMsg:
		g.reloadFail.Add(1)
	}
	short := string(line)
	if len(short) > 600 {
		short = short[:600] + "…"
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !isJSON {
		msg = "(not JSON)"
	}
	g.msgs[addrPattern.ReplaceAllString(msg, "ADDR")]++
	if msg == "tls handshake failed" {
		if remote, _ := jsonString(line, "remote"); strings.HasPrefix(remote, soakCloudflareAddr+":") && len(g.hsFailed) < 10000 {
			g.hsFailed[remote], _ = jsonString(line, "error")
		}
	}
	if strings.HasPrefix(msg, "reloading configuration") {
		trigger, _ := jsonString(line, "trigger")
		if trigger == "" {
			trigger = "SIGHUP"
		}
		g.triggers[trigger]++
	}
	trouble := !isJSON || bytes.Contains(line, []byte("panic")) || bytes.Contains(line, []byte(`"level":"fatal"`)) ||
		(bytes.Contains(line, []byte(`"level":"error"`)) && msg != reloadFailedMsg)
	if trouble && len(g.notable) < 20 {
		g.notable = append(g.notable, "aopguard logged: "+short)
	}
	if len(g.tail) < 60 {
		g.tail = append(g.tail, short)
	} else {
		g.tail[g.tailNext] = short
		g.tailNext = (g.tailNext + 1) % len(g.tail)
	}
}

// handshakeFailure returns the error aopguard logged for a failed
// handshake from remote (a valid client's address), waiting briefly for
// the line; "" when it logged none.
func (g *soakProc) handshakeFailure(remote string) string {
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		g.mu.Lock()
		why, ok := g.hsFailed[remote]
		g.mu.Unlock()
		if ok || time.Now().After(deadline) {
			return why
		}
	}
}

func (g *soakProc) tailText() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return strings.Join(append(append([]string{}, g.tail[g.tailNext:]...), g.tail[:g.tailNext]...), "\n")
}

// jsonString extracts a top-level string field from a zerolog line without
// decoding it all; ok is false when the line is not a JSON object.
func jsonString(line []byte, key string) (string, bool) {
	if len(line) == 0 || line[0] != '{' {
		return "", false
	}
	i := bytes.Index(line, []byte(`"`+key+`":"`))
	if i < 0 {
		return "", true
	}
	rest := line[i+len(key)+4:]
	for j := 0; j < len(rest); j++ {
		switch rest[j] {
		case '\\':
			j++
		case '"':
			var out string
			if json.Unmarshal(rest[:j+1], &out) != nil {
				return string(rest[:j]), true
			}
			return out, true
		}
	}
	return "", true
}

// String forms of a few errors, for outcome labels.
func errClass(err error) string {
	if err == nil {
		return "ok"
	}
	e := err.Error()
	switch {
	case strings.Contains(e, "certificate required"):
		return "alert-certificate-required"
	case strings.Contains(e, "bad certificate"):
		return "alert-bad-certificate"
	case strings.Contains(e, "unknown certificate authority"):
		return "alert-unknown-ca"
	case strings.Contains(e, "expired"):
		return "alert-certificate-expired"
	case strings.Contains(e, "remote error"):
		return "alert-other"
	case strings.Contains(e, "connection reset"):
		return "reset"
	case strings.Contains(e, "broken pipe"):
		return "broken-pipe"
	case err == io.EOF || strings.Contains(e, "EOF"):
		return "eof"
	case isTimeout(err):
		return "timeout"
	}
	return "other"
}

func isTimeout(err error) bool {
	if err == nil {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return strings.Contains(err.Error(), "deadline exceeded") || strings.Contains(err.Error(), "timeout")
}
