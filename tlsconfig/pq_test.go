package tlsconfig

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aopguard/aopguard/internal/testpki"
)

// pqFixture is the post-quantum PKI of this package's tests: ML-DSA CAs and
// leaves of every parameter set, an ML-DSA chain through an intermediate,
// and the mixed chains client_cert_signatures: post-quantum must refuse.
type pqFixture struct {
	cas    map[int]*testpki.Cert // ML-DSA roots by level
	leaves map[int]*testpki.Cert // ML-DSA leaves under cas[level]
	// root -> inter -> interLeaf, all ML-DSA-65.
	root, inter, interLeaf *testpki.Cert
	// ML-DSA root -> ECDSA intermediate -> ML-DSA leaf: the leaf's
	// signature is classical.
	classicalInter, underClassicalInter *testpki.Cert
	// ECDSA leaf under an ML-DSA CA; ML-DSA leaf under the ECDSA zone CA.
	ecdsaUnderPQ, pqUnderECDSA *testpki.Cert
	// An ML-DSA leaf from an ML-DSA CA no policy trusts.
	stranger *testpki.Cert
}

var (
	pqOnce sync.Once
	pqFix  *pqFixture
)

func getPQFixture(t testing.TB) *pqFixture {
	t.Helper()
	f := getFixture(t)
	pqOnce.Do(func() {
		p := &pqFixture{cas: map[int]*testpki.Cert{}, leaves: map[int]*testpki.Cert{}}
		for _, level := range []int{44, 65, 87} {
			p.cas[level] = testpki.MLDSACA(t, "ML-DSA CA", level)
			p.leaves[level] = testpki.MLDSAClient(t, p.cas[level], "ML-DSA client", level)
		}
		p.root = testpki.MLDSACA(t, "ML-DSA root", 65)
		p.inter = testpki.Intermediate(t, p.root, "ML-DSA intermediate", 65)
		p.interLeaf = testpki.MLDSAClient(t, p.inter, "client under ML-DSA intermediate", 65)
		p.classicalInter = testpki.Intermediate(t, p.root, "ECDSA intermediate", 0)
		p.underClassicalInter = testpki.MLDSAClient(t, p.classicalInter, "client under ECDSA intermediate", 65)
		p.ecdsaUnderPQ = testpki.Client(t, p.cas[65], "ECDSA client under ML-DSA CA")
		p.pqUnderECDSA = testpki.MLDSAClient(t, f.zoneCA, "ML-DSA client under ECDSA CA", 44)
		p.stranger = testpki.MLDSAClient(t, testpki.MLDSACA(t, "unknown ML-DSA CA", 65), "stranger", 65)
		pqFix = p
	})
	if pqFix == nil {
		t.Fatal("post-quantum test PKI could not be built")
	}
	return pqFix
}

// pqCAs are the roots of the post-quantum tests' policies: the classical
// zone CA and every ML-DSA root.
func pqCAs(f *fixture, p *pqFixture) []*x509.Certificate {
	return caList(f.zoneCA, p.cas[44], p.cas[65], p.cas[87], p.root)
}

// TestPostQuantumHandshakes runs real TLS 1.3 handshakes from Go clients
// presenting ML-DSA and classical certificates, under every mode and both
// client_cert_signatures settings, and checks the verdict, its counter,
// the signature algorithm and the post-quantum key agreement.
func TestPostQuantumHandshakes(t *testing.T) {
	t.Parallel()
	f := getFixture(t)
	p := getPQFixture(t)
	clients := []struct {
		name string
		cert *tls.Certificate
		// Verdict under any; under post-quantum a verified classical
		// chain fails with classical instead.
		result    Result
		reason    string
		pq        bool // the chain is ML-DSA throughout
		signature x509.SignatureAlgorithm
	}{
		{"ML-DSA-44", tlsCert(p.leaves[44]), Success, "", true, x509.MLDSA44},
		{"ML-DSA-65", tlsCert(p.leaves[65]), Success, "", true, x509.MLDSA65},
		{"ML-DSA-87", tlsCert(p.leaves[87]), Success, "", true, x509.MLDSA87},
		{"ML-DSA-65 chain through an intermediate", tlsCert(p.interLeaf, p.inter), Success, "", true, x509.MLDSA65},
		{"ML-DSA leaf under an ECDSA intermediate", tlsCert(p.underClassicalInter, p.classicalInter), Success, "", false, x509.ECDSAWithSHA256},
		{"ECDSA leaf under an ML-DSA CA", tlsCert(p.ecdsaUnderPQ), Success, "", false, x509.MLDSA65},
		{"ML-DSA leaf under an ECDSA CA", tlsCert(p.pqUnderECDSA), Success, "", false, x509.ECDSAWithSHA256},
		{"ECDSA leaf", tlsCert(f.zoneLeaf), Success, "", false, x509.ECDSAWithSHA256},
		{"untrusted ML-DSA", tlsCert(p.stranger), Failed, ReasonUntrusted, false, x509.MLDSA65},
		{"none", nil, None, ReasonMissing, false, x509.UnknownSignatureAlgorithm},
	}
	for _, mode := range []Mode{Off, LogOnly, Require} {
		for _, sigs := range []Signatures{AnySignatures, PostQuantum} {
			for _, cl := range clients {
				t.Run(mode.String()+"/"+sigs.String()+"/"+cl.name, func(t *testing.T) {
					t.Parallel()
					rec := &counterRec{}
					set := mustSet(t, PolicySpec{Mode: mode, Signatures: sigs, CAs: pqCAs(f, p)}, nil, mustTickets(t), rec)
					h := newHarness(t, set, ServerOptions{})

					// The Go client's defaults: X25519MLKEM768 offered first.
					res := h.dial(clientConfig(t, tls.VersionTLS13, "a.example.com", cl.cert))
					obs := h.next()

					wantResult, wantReason := cl.result, cl.reason
					if sigs == PostQuantum && wantResult == Success && !cl.pq {
						wantResult, wantReason = Failed, ReasonClassical
					}
					if mode == Off {
						wantResult, wantReason = None, ""
					}
					if obs.info.CurveID != tls.X25519MLKEM768 {
						t.Errorf("server Info.CurveID %v, want X25519MLKEM768", obs.info.CurveID)
					}
					if mode == Require && wantResult != Success {
						checkRefused(t, res, obs, set.Zone(), tls.VersionTLS13, wantReason)
						h.noneAccepted()
					} else {
						if err := res.err(); err != nil {
							t.Fatalf("client: %v", err)
						}
						if res.state.CurveID != tls.X25519MLKEM768 {
							t.Errorf("client negotiated %v, want X25519MLKEM768", res.state.CurveID)
						}
						info := h.nextAccepted()
						v := info.Verdict
						if v.Result != wantResult || v.Reason != wantReason {
							t.Fatalf("verdict %s/%q, want %s/%q", v.Result, v.Reason, wantResult, wantReason)
						}
						if info.CurveID != tls.X25519MLKEM768 {
							t.Errorf("Info.CurveID %v", info.CurveID)
						}
						if mode != Off && cl.cert != nil {
							if v.Signature != cl.signature || v.Fingerprint == "" {
								t.Errorf("verdict signature %v fingerprint %q, want %v", v.Signature, v.Fingerprint, cl.signature)
							}
							if v.PostQuantum != (cl.pq && cl.result == Success) {
								t.Errorf("verdict PostQuantum %v", v.PostQuantum)
							}
						}
					}
					action := set.Zone().ActionFor(Verdict{Result: wantResult})
					want := labels(ZoneName, mode.String(), wantResult.String(), action.String())
					if counts := rec.counts(); len(counts) != 1 || counts[want] != 1 {
						t.Errorf("counters %v, want %s = 1", counts, want)
					}
				})
			}
		}
	}
}

// TestPostQuantumTLS12 checks what a TLS 1.2 client gets: it cannot present
// an ML-DSA certificate (Go's client sends none), which a post-quantum
// policy reports as needs_tls13, and a classical certificate is classical.
func TestPostQuantumTLS12(t *testing.T) {
	t.Parallel()
	f := getFixture(t)
	p := getPQFixture(t)
	tests := []struct {
		name   string
		sigs   Signatures
		cert   *testpki.Cert
		result Result
		reason string
	}{
		{"ML-DSA cert, any", AnySignatures, p.leaves[65], None, ReasonMissing},
		{"ML-DSA cert, post-quantum", PostQuantum, p.leaves[65], None, ReasonNeedsTLS13},
		{"no cert, post-quantum", PostQuantum, nil, None, ReasonNeedsTLS13},
		{"ECDSA cert, post-quantum", PostQuantum, f.zoneLeaf, Failed, ReasonClassical},
		{"ECDSA cert, any", AnySignatures, f.zoneLeaf, Success, ""},
	}
	for _, mode := range []Mode{LogOnly, Require} {
		for _, tt := range tests {
			t.Run(mode.String()+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				set := mustSet(t, PolicySpec{Mode: mode, Signatures: tt.sigs, CAs: pqCAs(f, p)}, nil, mustTickets(t), nil)
				h := newHarness(t, set, ServerOptions{})
				cfg := clientConfig(t, tls.VersionTLS12, "a.example.com", nil)
				if tt.cert != nil {
					// As a client holding the certificate would: crypto/tls
					// picks it only where the handshake can use it.
					cfg.Certificates = []tls.Certificate{tt.cert.TLS()}
				}
				res := h.dial(cfg)
				obs := h.next()
				if mode == Require && tt.result != Success {
					checkRefused(t, res, obs, set.Zone(), tls.VersionTLS12, tt.reason)
					if obs.info.Version != tls.VersionTLS12 {
						t.Errorf("refused handshake: Info.Version %x", obs.info.Version)
					}
					return
				}
				if err := res.err(); err != nil {
					t.Fatalf("client: %v", err)
				}
				info := h.nextAccepted()
				if info.Verdict.Result != tt.result || info.Verdict.Reason != tt.reason {
					t.Errorf("verdict %s/%q, want %s/%q", info.Verdict.Result, info.Verdict.Reason, tt.result, tt.reason)
				}
				if PostQuantumKeyAgreement(info.CurveID) {
					t.Errorf("TLS 1.2 negotiated %v", info.CurveID)
				}
			})
		}
	}
}

// TestPostQuantumResumption: resumed sessions are judged by the current
// policy, so switching a policy to post-quantum stops a session that was
// established with a classical certificate, while ML-DSA sessions keep
// resuming.
func TestPostQuantumResumption(t *testing.T) {
	t.Parallel()
	f := getFixture(t)
	p := getPQFixture(t)
	keys := mustTickets(t)
	for _, mode := range []Mode{LogOnly, Require} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			anySet := mustSet(t, PolicySpec{Mode: mode, CAs: pqCAs(f, p)}, nil, keys, nil)
			pqSet := mustSet(t, PolicySpec{Mode: mode, Signatures: PostQuantum, CAs: pqCAs(f, p)}, nil, keys, nil)
			h := newHarness(t, anySet, ServerOptions{})
			mldsa, classical := tls.NewLRUClientSessionCache(4), tls.NewLRUClientSessionCache(4)
			for _, c := range []struct {
				cache tls.ClientSessionCache
				cert  *testpki.Cert
			}{{mldsa, p.leaves[65]}, {classical, f.zoneLeaf}} {
				if st, info := h.admitted(withCache(clientConfig(t, tls.VersionTLS13, "a.example.com", tlsCert(c.cert)), c.cache)); st.DidResume || info.Verdict.Result != Success {
					t.Fatalf("first connection: resumed %v verdict %+v", st.DidResume, info.Verdict)
				}
			}
			h.cur.Store(pqSet) // a reload switches to post-quantum; the ticket keys survive

			st, info := h.admitted(withCache(clientConfig(t, tls.VersionTLS13, "a.example.com", tlsCert(p.leaves[65])), mldsa))
			if !st.DidResume || !info.Resumed || info.Verdict.Result != Success || !info.Verdict.PostQuantum {
				t.Errorf("ML-DSA session: resumed %v/%v verdict %+v, want resumed and post-quantum success", st.DidResume, info.Resumed, info.Verdict)
			}

			res := h.dial(withCache(clientConfig(t, tls.VersionTLS13, "a.example.com", tlsCert(f.zoneLeaf)), classical))
			obs := h.next()
			if mode == Require {
				checkRefused(t, res, obs, pqSet.Zone(), tls.VersionTLS13, ReasonClassical)
				return
			}
			if res.err() != nil || !res.state.DidResume {
				t.Fatalf("classical session under log-only: err %v resumed %v", res.err(), res.state.DidResume)
			}
			if info := h.nextAccepted(); info.Verdict.Reason != ReasonClassical || pqSet.Zone().ActionFor(info.Verdict) != WouldReject {
				t.Errorf("classical resumed session: verdict %+v, want would_reject/classical", info.Verdict)
			}
		})
	}
}

// TestPostQuantumPerHost: the setting is per policy; a host's own wins over
// the zone's, and a host inheriting the zone's CAs tells zone certificates
// apart as before.
func TestPostQuantumPerHost(t *testing.T) {
	t.Parallel()
	f := getFixture(t)
	p := getPQFixture(t)
	set := mustSet(t, PolicySpec{Mode: Require, CAs: caList(f.zoneCA)},
		[]PolicySpec{
			{Name: "pq.example.com", Mode: Require, Signatures: PostQuantum, CAs: caList(p.cas[65])},
			{Name: "any.example.com", Mode: Require, CAs: caList(p.cas[65])},
		}, mustTickets(t), nil)
	tests := []struct {
		host   string
		cert   *testpki.Cert
		reason string
	}{
		{"pq.example.com", p.leaves[65], ""},
		{"pq.example.com", p.ecdsaUnderPQ, ReasonClassical},
		{"pq.example.com", f.zoneLeaf, ReasonZoneCertOnHost},
		{"any.example.com", p.ecdsaUnderPQ, ""},
		{"other.example.com", f.zoneLeaf, ""},
		{"other.example.com", p.leaves[65], ReasonUntrusted},
	}
	for _, tt := range tests {
		v := set.Match(tt.host).VerifyTLS([]*x509.Certificate{tt.cert.Cert}, tls.VersionTLS13)
		if v.Reason != tt.reason || (tt.reason == "") != (v.Result == Success) {
			t.Errorf("%s with %s: verdict %+v, want reason %q", tt.host, tt.cert.Cert.Subject.CommonName, v, tt.reason)
		}
	}
}

// TestPostQuantumCacheAllowCRL: the verdict cache, pinning and CRLs work
// for ML-DSA chains as for classical ones.
func TestPostQuantumCacheAllowCRL(t *testing.T) {
	t.Parallel()
	p := getPQFixture(t)
	ca := p.cas[87]
	pinned := testpki.MLDSAClient(t, ca, "pinned", 87)
	other := testpki.MLDSAClient(t, ca, "other", 87)
	revoked := testpki.MLDSAClient(t, ca, "revoked", 87)
	sum := sha256.Sum256(pinned.Cert.RawSubjectPublicKeyInfo)
	crl := makeCRL(t, ca, revoked) // signed with ML-DSA-87
	set, err := NewSet(PolicySpec{Mode: Require, Signatures: PostQuantum, CAs: caList(ca),
		Allow: AllowRules{SPKISHA256: [][32]byte{sum}, CN: []string{"revoked"}}, CRLs: []*x509.RevocationList{crl}},
		nil, Options{Tickets: mustTickets(t)})
	if err != nil {
		t.Fatalf("an ML-DSA-signed CRL was refused: %v", err)
	}
	pol := set.Zone()
	for _, tt := range []struct {
		cert   *testpki.Cert
		reason string
	}{{pinned, ""}, {other, ReasonNotAllowed}, {revoked, ReasonRevoked}} {
		chain := []*x509.Certificate{tt.cert.Cert}
		first := pol.Verify(chain)
		if first.Reason != tt.reason {
			t.Errorf("%s: reason %q, want %q", tt.cert.Cert.Subject.CommonName, first.Reason, tt.reason)
		}
		if again := pol.Verify(chain); again != first {
			t.Errorf("%s: cached verdict %+v differs from %+v", tt.cert.Cert.Subject.CommonName, again, first)
		}
		if _, ok := pol.cache.get(chainKey(chain), time.Now()); !ok {
			t.Errorf("%s: verdict not cached", tt.cert.Cert.Subject.CommonName)
		}
	}
}

// TestKeyAgreementNotRestricted: nothing in the server's configuration
// narrows the key-agreement groups, so crypto/tls's default (post-quantum
// X25519MLKEM768 preferred) stays in force.
func TestKeyAgreementNotRestricted(t *testing.T) {
	t.Parallel()
	f := getFixture(t)
	set := mustSet(t, PolicySpec{Mode: LogOnly, CAs: caList(f.zoneCA)},
		[]PolicySpec{{Name: "h.example.com", Mode: Require, Signatures: PostQuantum, CAs: caList(f.zoneCA)}}, mustTickets(t), nil)
	for _, pol := range set.Policies() {
		if c := pol.TLSConfig(); len(c.CurvePreferences) != 0 {
			t.Errorf("policy %s sets CurvePreferences %v", pol.Name(), c.CurvePreferences)
		}
	}
	if len(set.refuse.CurvePreferences) != 0 {
		t.Errorf("the refusing config sets CurvePreferences")
	}
	if s := NewServer(func() *Set { return set }, ServerOptions{}); len(s.base.CurvePreferences) != 0 {
		t.Errorf("the server's base config sets CurvePreferences")
	}
	// A client that offers only classical groups still gets in.
	h := newHarness(t, set, ServerOptions{})
	cfg := clientConfig(t, tls.VersionTLS13, "a.example.com", tlsCert(f.zoneLeaf))
	cfg.CurvePreferences = []tls.CurveID{tls.X25519}
	if st, info := h.admitted(cfg); st.CurveID != tls.X25519 || info.CurveID != tls.X25519 {
		t.Errorf("classical-only client: negotiated %v / %v", st.CurveID, info.CurveID)
	}
}

func TestAlgorithmNames(t *testing.T) {
	t.Parallel()
	for id, want := range map[tls.CurveID]string{
		tls.X25519MLKEM768: "X25519MLKEM768", tls.SecP256r1MLKEM768: "SecP256r1MLKEM768", tls.X25519: "X25519",
		tls.CurveP256: "P-256", tls.CurveP384: "P-384", 0: "none", 0x1234: "other",
	} {
		if got := KeyAgreementName(id); got != want {
			t.Errorf("KeyAgreementName(%d) = %q, want %q", id, got, want)
		}
		if got, pq := PostQuantumKeyAgreement(id), strings.Contains(want, "MLKEM"); got != pq {
			t.Errorf("PostQuantumKeyAgreement(%s) = %v", want, got)
		}
	}
	for _, tt := range []struct {
		v    Verdict
		want string
	}{
		{Verdict{}, "none"},
		{Verdict{Fingerprint: "ab", Signature: x509.MLDSA65}, "ML-DSA-65"},
		{Verdict{Fingerprint: "ab", Signature: x509.SHA256WithRSA}, "SHA256-RSA"},
		{Verdict{Fingerprint: "ab"}, "other"},
	} {
		if got := SignatureName(tt.v); got != tt.want {
			t.Errorf("SignatureName(%+v) = %q, want %q", tt.v, got, tt.want)
		}
	}
	if _, err := ParseSignatures("pq"); err == nil {
		t.Error("ParseSignatures(pq) succeeded")
	}
	for _, s := range []Signatures{AnySignatures, PostQuantum} {
		if got, err := ParseSignatures(s.String()); err != nil || got != s {
			t.Errorf("ParseSignatures(%q) = %v, %v", s, got, err)
		}
	}
}
