package proxy

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"testing"

	"github.com/aopguard/aopguard/internal/testpki"
	"github.com/aopguard/aopguard/tlsconfig"
)

// TestPostQuantumRequests sends requests over real TLS 1.3 connections
// presenting ML-DSA and classical certificates to hosts with
// client_cert_signatures any and post-quantum, and checks what reaches which
// upstream, the verification headers, the Host re-check and the access line
// (key agreement and certificate signature).
func TestPostQuantumRequests(t *testing.T) {
	pki := newPKI(t)
	pqCA := testpki.MLDSACA(t, "ML-DSA AOP CA", 65)
	mldsa := testpki.MLDSAClient(t, pqCA, "ML-DSA edge", 65)
	classical := testpki.Client(t, pqCA, "ECDSA edge") // ECDSA key, ML-DSA signature
	uz, upq, ulpq, uany := newUpstream(t, "zone", nil), newUpstream(t, "pq", nil), newUpstream(t, "lpq", nil), newUpstream(t, "any", nil)
	h := newHarness(t, pki, harnessConfig{
		zone: tlsconfig.PolicySpec{Mode: tlsconfig.LogOnly, CAs: cas(pki.zoneCA, pqCA), Upstream: uz.url},
		hosts: []tlsconfig.PolicySpec{
			{Name: "pq.example.com", Mode: tlsconfig.Require, Signatures: tlsconfig.PostQuantum, CAs: cas(pqCA), Upstream: upq.url},
			{Name: "lpq.example.com", Mode: tlsconfig.LogOnly, Signatures: tlsconfig.PostQuantum, CAs: cas(pqCA), Upstream: ulpq.url},
			{Name: "any.example.com", Mode: tlsconfig.Require, CAs: cas(pqCA), Upstream: uany.url},
		},
	})
	all := []*upstream{uz, upq, ulpq, uany}
	tests := []struct {
		name      string
		sni, host string
		cert      *testpki.Cert
		status    int
		to        *upstream // nil: nothing forwarded
		verify    string    // X-Client-Verify at the upstream
		signature string    // cert_signature in the access line
	}{
		{"ML-DSA at post-quantum require", "pq.example.com", "pq.example.com", mldsa, 200, upq, "SUCCESS", "ML-DSA-65"},
		{"ML-DSA at any", "any.example.com", "any.example.com", mldsa, 200, uany, "SUCCESS", "ML-DSA-65"},
		{"classical at any", "any.example.com", "any.example.com", classical, 200, uany, "SUCCESS", "ML-DSA-65"},
		{"classical at post-quantum log-only", "lpq.example.com", "lpq.example.com", classical, 200, ulpq, "FAILED:classical", "ML-DSA-65"},
		{"classical connection asks for post-quantum host", "any.example.com", "pq.example.com", classical, http.StatusMisdirectedRequest, nil, "", "ML-DSA-65"},
		{"classical connection asks for post-quantum log-only host", "any.example.com", "lpq.example.com", classical, 200, ulpq, "FAILED:classical", "ML-DSA-65"},
		{"ML-DSA connection asks for post-quantum host", "any.example.com", "pq.example.com", mldsa, 200, upq, "SUCCESS", "ML-DSA-65"},
		{"zone ECDSA edge certificate", "origin.example.net", "origin.example.net", pki.clientZone, 200, uz, "SUCCESS", "ECDSA-SHA256"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := fmt.Sprintf("/pq/%d", i)
			c, _ := h.client(t, clientOpts{sni: tt.sni, cert: tt.cert})
			if r := get(t, c, "GET", "https://"+tt.host+path, "", nil); r.status != tt.status {
				t.Fatalf("status %d, want %d", r.status, tt.status)
			}
			for _, u := range all {
				if n := len(u.got(path)); (u == tt.to) != (n == 1) || n > 1 {
					t.Errorf("upstream %s received %d requests", u.name, n)
				}
			}
			if tt.to != nil {
				wantVerifyHeaders(t, tt.to.one(t, path).Header, tt.verify, fingerprint(tt.cert))
			}
			line := h.log.access(t, path)
			if line["key_agreement"] != "X25519MLKEM768" || line["cert_signature"] != tt.signature || line["fingerprint"] != fingerprint(tt.cert) {
				t.Errorf("access line key_agreement %v cert_signature %v fingerprint %v, want X25519MLKEM768 %s %s",
					line["key_agreement"], line["cert_signature"], line["fingerprint"], tt.signature, fingerprint(tt.cert))
			}
		})
	}

	t.Run("resumed ML-DSA sessions", func(t *testing.T) {
		sessions := tls.NewLRUClientSessionCache(4)
		for i, wantResumed := range []bool{false, true} {
			path := fmt.Sprintf("/pq/resume/%d", i)
			// A fresh client per request: a new connection each time.
			c, _ := h.client(t, clientOpts{sni: "pq.example.com", cert: mldsa, sessions: sessions})
			if r := get(t, c, "GET", "https://pq.example.com"+path, "", nil); r.status != 200 {
				t.Fatalf("request %d: status %d", i, r.status)
			}
			wantVerifyHeaders(t, upq.one(t, path).Header, "SUCCESS", fingerprint(mldsa))
			line := h.log.access(t, path)
			if line["resumed"] != wantResumed || line["cert_signature"] != "ML-DSA-65" || line["key_agreement"] != "X25519MLKEM768" {
				t.Errorf("request %d: access line resumed %v cert_signature %v key_agreement %v, want resumed %v",
					i, line["resumed"], line["cert_signature"], line["key_agreement"], wantResumed)
			}
		}
	})
}
