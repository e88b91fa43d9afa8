package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/aopguard/aopguard/certs"
	"github.com/aopguard/aopguard/internal/testpki"
	"github.com/aopguard/aopguard/rollout"
)

// TestPostQuantumRollout walks the staged switch to post-quantum with the
// real binary: evidence under client_cert_signatures: any (one host that
// Cloudflare reaches only with ML-DSA certificates, one with a mix), the
// switch to post-quantum in log-only (classical ones reported), then
// require (classical ones refused at the handshake).
func TestPostQuantumRollout(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t)
	pqCA := testpki.MLDSACA(t, "app ML-DSA AOP CA", 65)
	mldsa := testpki.MLDSAClient(t, pqCA, "app.example.com", 65)
	p.write(t, "hosts-ca.pem", testpki.Bundle(p.hostCA, pqCA))
	p.write(t, "cf-ips.txt", []byte(cloudflareAddr+"/32\n"))
	config := func(sigs, mode string) string {
		return `
upstream: ` + up.URL + `
mode: log-only
zone_ca: zone-ca.pem
cloudflare_ips: cf-ips.txt
ready_min_requests: 3
certificates:
  - cert: server.pem
    key: server.key
hosts:
  - name: app.example.com
    ca: hosts-ca.pem
    mode: ` + mode + `
    client_cert_signatures: ` + sigs + `
  - name: other.example.com
    ca: hosts-ca.pem
`
	}
	writeConfig(t, p.dir, config("any", "log-only"))
	g := start(t, "--config", p.path("aopguard.yaml"))
	request := func(host string, leaf *testpki.Cert) (string, error) {
		t.Helper()
		resp, err := fromAddr(t, cloudflareAddr, g.listen, p.clientTLS(host, leaf), host, "")
		if err != nil {
			return "", err
		}
		return resp.Header.Get("X-Upstream-Saw-Client-Verify"), nil
	}
	for _, r := range []struct {
		host string
		leaf *testpki.Cert
	}{
		{"app.example.com", mldsa}, {"app.example.com", mldsa}, {"app.example.com", mldsa},
		{"other.example.com", mldsa}, {"other.example.com", p.hostLeaf}, {"other.example.com", p.hostLeaf},
	} {
		if v, err := request(r.host, r.leaf); err != nil || v != "SUCCESS" {
			t.Fatalf("%s with %s: %q %v", r.host, r.leaf.Cert.Subject.CommonName, v, err)
		}
	}
	lines := g.waitLog("request", 6)
	for _, l := range lines {
		want := "ML-DSA-65"
		if l["host"] == "other.example.com" && l["fingerprint"] != certs.Fingerprint(mldsa.Cert.Raw) {
			want = "ECDSA-SHA256"
		}
		if l["key_agreement"] != "X25519MLKEM768" || l["cert_signature"] != want {
			t.Errorf("access line %v: key_agreement %v cert_signature %v, want X25519MLKEM768 %s", l["host"], l["key_agreement"], l["cert_signature"], want)
		}
	}
	rep := statusReport(t, g)
	app, other := policyReport(t, rep, "app.example.com"), policyReport(t, rep, "other.example.com")
	if app.Signatures != "any" || app.PostQuantum.Verdict != rollout.SafeToSwitch || app.PostQuantum.LastHour.Cloudflare != (rollout.PQCounts{Verified: 3, MLDSA: 3, PostQuantumKeyAgreement: 3}) {
		t.Errorf("app: %s %+v", app.Signatures, app.PostQuantum)
	}
	if other.PostQuantum.Verdict != rollout.NotSafe || other.PostQuantum.MLDSAShare == nil || *other.PostQuantum.MLDSAShare > 0.34 ||
		!strings.Contains(other.PostQuantum.Why, "2 of 3") {
		t.Errorf("other: %+v", other.PostQuantum)
	}
	_, out := statusCLI(t, g)
	for _, want := range []string{
		"post-quantum (client_cert_signatures: any): 100% of 3 verified Cloudflare handshakes in the last hour with ML-DSA certificates, 100% with post-quantum key agreement",
		"safe_to_switch — all 3 verified handshakes",
		"post-quantum (client_cert_signatures: any): 33% of 3",
		"not_safe — 2 of 3",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("aopguard status lacks %q:\n%s", want, out)
		}
	}
	for series, want := range map[string]string{
		`aopguard_tls_handshake_algorithms_total{cert_signature="ML-DSA-65",host="app.example.com",key_agreement="X25519MLKEM768"}`:      "3",
		`aopguard_tls_handshake_algorithms_total{cert_signature="ECDSA-SHA256",host="other.example.com",key_agreement="X25519MLKEM768"}`: "2",
	} {
		if got := g.metric(series); got != want {
			t.Errorf("%s = %q, want %s", series, got, want)
		}
	}

	// Switch app.example.com to post-quantum, log-only first: a classical
	// certificate is let in and reported.
	writeConfig(t, p.dir, config("post-quantum", "log-only"))
	if !g.reload() {
		t.Fatal("reload to post-quantum log-only failed")
	}
	if v, err := request("app.example.com", mldsa); err != nil || v != "SUCCESS" {
		t.Fatalf("ML-DSA under post-quantum log-only: %q %v", v, err)
	}
	if v, err := request("app.example.com", p.hostLeaf); err != nil || v != "FAILED:classical" {
		t.Fatalf("classical under post-quantum log-only: %q %v", v, err)
	}
	g.waitLog("request", 8)
	app = policyReport(t, statusReport(t, g), "app.example.com")
	if app.Signatures != "post-quantum" || app.PostQuantum.Verdict != rollout.PostQuantumOn || app.Verdict != rollout.NotReady || !strings.Contains(app.Why, "classical 1") {
		t.Errorf("app after the switch: %s %s (%s) %+v", app.Signatures, app.Verdict, app.Why, app.PostQuantum)
	}
	series := `aopguard_client_cert_verifications_total{action="would_reject",host="app.example.com",mode="log-only",reason="classical",result="failed",source="cloudflare"}`
	if got := g.metric(series); got != "1" {
		t.Errorf("%s = %q, want 1", series, got)
	}

	// Then require: the classical certificate is refused at the handshake.
	writeConfig(t, p.dir, config("post-quantum", "require"))
	if !g.reload() {
		t.Fatal("reload to post-quantum require failed")
	}
	if v, err := request("app.example.com", mldsa); err != nil || v != "SUCCESS" {
		t.Fatalf("ML-DSA under post-quantum require: %q %v", v, err)
	}
	if _, err := request("app.example.com", p.hostLeaf); err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Fatalf("classical under post-quantum require: %v, want a bad_certificate alert", err)
	}
	refused := g.waitLog("handshake refused: client certificate not accepted", 1)[0]
	if refused["reason"] != "classical" || refused["policy"] != "app.example.com" {
		t.Errorf("refusal log line %v", refused)
	}
}

// TestCheckPostQuantum: "aopguard check --client-cert" presents an ML-DSA
// certificate (files written by "aopguard certs") to a post-quantum
// aopguard, and shows a classical one refused there.
func TestCheckPostQuantum(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t)
	t.Chdir(p.dir)
	var out, errOut bytes.Buffer
	if code := dispatch([]string{"certs", "ca", "--cn", "PQ AOP CA", "--key-type", "ml-dsa-65", "--out", "pq-ca"}, &out, &errOut); code != 0 {
		t.Fatalf("certs ca: %d %s", code, errOut.String())
	}
	if code := dispatch([]string{"certs", "client", "--ca", "pq-ca", "--cn", "app.example.com", "--key-type", "ml-dsa-65", "--out", "pq-client"}, &out, &errOut); code != 0 {
		t.Fatalf("certs client: %d %s", code, errOut.String())
	}
	// A classical (ECDSA) client certificate from the same ML-DSA CA.
	if code := dispatch([]string{"certs", "client", "--ca", "pq-ca", "--cn", "app.example.com", "--key-type", "ecdsa", "--out", "ecdsa-client"}, &out, &errOut); code != 0 {
		t.Fatalf("certs client: %d %s", code, errOut.String())
	}
	g := start(t, "--config", aopguardConfig(t, p, up.URL, "require", "    ca: pq-ca.pem\n    client_cert_signatures: post-quantum\n"))
	for _, tc := range []struct {
		cert, key string
		code      int
		failed    []int
	}{
		{"pq-client.pem", "pq-client.key", 0, nil},
		{"ecdsa-client.pem", "ecdsa-client.key", 1, []int{5}},
	} {
		code, out, errOut := checkRun(t, "--origin", g.listen, "--host", "app.example.com", "--ca", p.path("server-ca.pem"),
			"--client-cert", p.path(tc.cert), "--client-key", p.path(tc.key), "--json")
		rep := parseCheckJSON(t, out)
		if code != tc.code || !slices.Equal(rep.failedProbes(), tc.failed) {
			t.Errorf("%s: exit %d, failed probes %v; want %d, %v\n%s%s", tc.cert, code, rep.failedProbes(), tc.code, tc.failed, out, errOut)
		}
	}
	// certs inspect --config gives the post-quantum policy's verdicts.
	out.Reset()
	if code := dispatch([]string{"certs", "inspect", "--config", p.path("aopguard.yaml"), "pq-client.pem", "ecdsa-client.pem"}, &out, &errOut); code != 0 {
		t.Fatalf("certs inspect: %d %s", code, errOut.String())
	}
	for _, want := range []string{
		"app.example.com (require, post-quantum) allow: SUCCESS",
		"app.example.com (require, post-quantum) reject: FAILED:classical",
		"signature:   ML-DSA-65 (post-quantum)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("certs inspect lacks %q:\n%s", want, out.String())
		}
	}
	var sawClassical bool
	for _, l := range g.all("handshake refused: client certificate not accepted") {
		sawClassical = sawClassical || l["reason"] == "classical" && l["policy"] == "app.example.com"
	}
	if !sawClassical {
		t.Errorf("no refusal of the classical certificate with reason classical:\n%s", g.output())
	}
}
