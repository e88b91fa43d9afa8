package tlsconfig

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"math/big"
	"testing"
	"time"

	"github.com/aopguard/aopguard/internal/testpki"
)

func TestVerify(t *testing.T) {
	t.Parallel()
	f := getFixture(t)
	now := time.Now()
	root := testpki.CA(t, "root")
	inter := testpki.New(t, root, testpki.Options{CN: "intermediate", IsCA: true})
	viaInter := testpki.Client(t, inter, "via intermediate")
	oldCA, newCA := testpki.CA(t, "old CA"), testpki.CA(t, "new CA")
	oldLeaf, newLeaf := testpki.Client(t, oldCA, "old leaf"), testpki.Client(t, newCA, "new leaf")
	notYet := testpki.New(t, f.zoneCA, testpki.Options{CN: "future", NotBefore: now.Add(time.Hour), NotAfter: now.Add(48 * time.Hour)})
	expiredCA := testpki.New(t, nil, testpki.Options{CN: "expired CA", IsCA: true, NotBefore: now.Add(-72 * time.Hour), NotAfter: now.Add(-time.Hour)})
	underExpiredCA := testpki.New(t, expiredCA, testpki.Options{CN: "under expired CA", NotBefore: now.Add(-48 * time.Hour)})
	noEKU := testpki.New(t, f.zoneCA, testpki.Options{CN: "no EKU", NoEKU: true})
	rsaLeaf := testpki.New(t, f.zoneCA, testpki.Options{CN: "rsa", RSABits: 2048})

	tests := []struct {
		name   string
		mode   Mode
		cas    []*testpki.Cert
		chain  []*testpki.Cert
		result Result
		reason string
	}{
		{"success", Require, []*testpki.Cert{f.zoneCA}, []*testpki.Cert{f.zoneLeaf}, Success, ""},
		{"success log-only", LogOnly, []*testpki.Cert{f.zoneCA}, []*testpki.Cert{f.zoneLeaf}, Success, ""},
		{"success RSA leaf", Require, []*testpki.Cert{f.zoneCA}, []*testpki.Cert{rsaLeaf}, Success, ""},
		{"no cert require", Require, []*testpki.Cert{f.zoneCA}, nil, None, ReasonMissing},
		{"no cert log-only", LogOnly, []*testpki.Cert{f.zoneCA}, nil, None, ReasonMissing},
		{"no cert off", Off, nil, nil, None, ""},
		{"cert under off is not judged", Off, nil, []*testpki.Cert{f.untrusted}, None, ""},
		{"untrusted", Require, []*testpki.Cert{f.zoneCA}, []*testpki.Cert{f.untrusted}, Failed, ReasonUntrusted},
		{"other policy's CA", Require, []*testpki.Cert{f.hostCA}, []*testpki.Cert{f.zoneLeaf}, Failed, ReasonUntrusted},
		{"expired leaf", Require, []*testpki.Cert{f.zoneCA}, []*testpki.Cert{f.expired}, Failed, ReasonExpired},
		{"not yet valid leaf", LogOnly, []*testpki.Cert{f.zoneCA}, []*testpki.Cert{notYet}, Failed, ReasonNotYetValid},
		{"expired CA", Require, []*testpki.Cert{expiredCA}, []*testpki.Cert{underExpiredCA}, Failed, ReasonExpired},
		{"serverAuth only", Require, []*testpki.Cert{f.zoneCA}, []*testpki.Cert{f.wrongUsage}, Failed, ReasonWrongUsage},
		// crypto/x509 treats a leaf without an EKU extension as valid for
		// any usage, and Verify inherits that: such a leaf is admitted.
		{"no EKU extension", Require, []*testpki.Cert{f.zoneCA}, []*testpki.Cert{noEKU}, Success, ""},
		{"intermediate presented", Require, []*testpki.Cert{root}, []*testpki.Cert{viaInter, inter}, Success, ""},
		{"intermediate not presented", Require, []*testpki.Cert{root}, []*testpki.Cert{viaInter}, Failed, ReasonUntrusted},
		{"intermediate configured as trust anchor", Require, []*testpki.Cert{inter}, []*testpki.Cert{viaInter}, Success, ""},
		{"client-supplied root is not trusted", Require, []*testpki.Cert{f.zoneCA}, []*testpki.Cert{f.untrusted, f.otherCA}, Failed, ReasonUntrusted},
		{"rotation bundle, old CA leaf", Require, []*testpki.Cert{oldCA, newCA}, []*testpki.Cert{oldLeaf}, Success, ""},
		{"rotation bundle, new CA leaf", Require, []*testpki.Cert{oldCA, newCA}, []*testpki.Cert{newLeaf}, Success, ""},
		{"rotation bundle, stranger", Require, []*testpki.Cert{oldCA, newCA}, []*testpki.Cert{f.untrusted}, Failed, ReasonUntrusted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newPolicy(t, tt.mode, tt.cas...)
			chain := caList(tt.chain...)
			v := p.Verify(chain)
			if v.Result != tt.result || v.Reason != tt.reason {
				t.Fatalf("Verify = %s/%q, want %s/%q", v.Result, v.Reason, tt.result, tt.reason)
			}
			if len(chain) == 0 {
				if v.Fingerprint != "" || v.Serial != "" || v.Subject != "" {
					t.Errorf("no certificate, but verdict names one: %+v", v)
				}
				return
			}
			leaf := chain[0]
			sum := sha256.Sum256(leaf.Raw)
			if want := hex.EncodeToString(sum[:]); v.Fingerprint != want {
				t.Errorf("Fingerprint = %s, want %s", v.Fingerprint, want)
			}
			if want := fmt.Sprintf("%x", leaf.SerialNumber); v.Serial != want {
				t.Errorf("Serial = %s, want %s", v.Serial, want)
			}
			if v.Subject != leaf.Subject.CommonName {
				t.Errorf("Subject = %q, want %q", v.Subject, leaf.Subject.CommonName)
			}
			// A second call (served from the cache) gives the same verdict.
			if again := p.Verify(chain); again != v {
				t.Errorf("second Verify = %+v, first %+v", again, v)
			}
		})
	}
}

func TestVerifySerialAndSubject(t *testing.T) {
	t.Parallel()
	f := getFixture(t)
	noCN := testpki.New(t, f.zoneCA, testpki.Options{})
	p := newPolicy(t, Require, f.zoneCA)
	v := p.Verify(caList(noCN))
	if v.Result != Success || v.Subject != "O=aopguard tests" {
		t.Errorf("Verify = %+v; want success with the DN as Subject", v)
	}
	if want := noCN.Cert.SerialNumber.Text(16); v.Serial != want || v.Serial == noCN.Cert.SerialNumber.String() {
		t.Errorf("Serial = %s, want hex %s (decimal %s)", v.Serial, want, noCN.Cert.SerialNumber)
	}
}

func chainKey(chain []*x509.Certificate) [32]byte {
	sum := sha256.Sum256(chain[0].Raw)
	if len(chain) == 1 {
		return sum
	}
	h := sha256.New()
	h.Write(sum[:])
	for _, c := range chain[1:] {
		h.Write(c.Raw)
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

func TestVerifyCache(t *testing.T) {
	t.Parallel()
	f := getFixture(t)

	t.Run("cached", func(t *testing.T) {
		t.Parallel()
		p := newPolicy(t, Require, f.zoneCA)
		chain := caList(f.zoneLeaf)
		v1, v2 := p.Verify(chain), p.Verify(chain)
		if v1 != v2 || v1.Result != Success {
			t.Fatalf("verdicts %+v, %+v", v1, v2)
		}
		e, ok := p.cache.get(chainKey(chain), time.Now())
		if !ok || e.result != Success {
			t.Fatalf("no cached success: %+v %v", e, ok)
		}
		// A success is cached until the first certificate of the chain
		// expires, and no longer.
		until := f.zoneLeaf.Cert.NotAfter
		if f.zoneCA.Cert.NotAfter.Before(until) {
			until = f.zoneCA.Cert.NotAfter
		}
		if !e.until.Equal(until) {
			t.Errorf("success cached until %v, want %v", e.until, until)
		}
		if _, ok := p.cache.get(chainKey(chain), until); ok {
			t.Error("success served at the moment the chain expires")
		}
	})

	t.Run("cache entries are served while valid", func(t *testing.T) {
		t.Parallel()
		p := newPolicy(t, Require, f.zoneCA)
		chain := caList(f.zoneLeaf)
		// A planted entry proves that Verify consults the cache.
		p.cache.put(chainKey(chain), cacheEntry{result: Failed, reason: ReasonNotYetValid, until: time.Now().Add(time.Hour)})
		if v := p.Verify(chain); v.Result != Failed || v.Reason != ReasonNotYetValid {
			t.Fatalf("Verify = %+v, want the planted entry", v)
		}
	})

	t.Run("stale not_yet_valid entry is not served", func(t *testing.T) {
		t.Parallel()
		p := newPolicy(t, Require, f.zoneCA)
		chain := caList(f.zoneLeaf)
		p.cache.put(chainKey(chain), cacheEntry{result: Failed, reason: ReasonNotYetValid, until: time.Now().Add(-time.Second)})
		if v := p.Verify(chain); v.Result != Success {
			t.Fatalf("Verify = %+v; a not_yet_valid entry was served after its leaf became valid", v)
		}
	})

	t.Run("leaf becomes valid", func(t *testing.T) {
		t.Parallel()
		// X.509 times have one-second precision: 2s ahead is at least 1s.
		notBefore := time.Now().Add(2 * time.Second)
		leaf := testpki.New(t, f.zoneCA, testpki.Options{CN: "soon", NotBefore: notBefore})
		p := newPolicy(t, Require, f.zoneCA)
		chain := caList(leaf)
		if v := p.Verify(chain); v.Result != Failed || v.Reason != ReasonNotYetValid {
			t.Fatalf("Verify before NotBefore = %+v", v)
		}
		e, ok := p.cache.get(chainKey(chain), time.Now())
		if !ok || !e.until.Equal(leaf.Cert.NotBefore) {
			t.Fatalf("cached %+v (%v); want until the leaf's NotBefore %v", e, ok, leaf.Cert.NotBefore)
		}
		// Poll: no assertion on how long this takes, only that it ends.
		deadline := time.Now().Add(15 * time.Second)
		for {
			v := p.Verify(chain)
			if v.Result == Success {
				break
			}
			if v.Reason != ReasonNotYetValid || time.Now().After(deadline) {
				t.Fatalf("Verify after NotBefore = %+v", v)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("chain with intermediates is its own entry", func(t *testing.T) {
		t.Parallel()
		root := testpki.CA(t, "root")
		inter := testpki.New(t, root, testpki.Options{CN: "intermediate", IsCA: true})
		leaf := testpki.Client(t, inter, "leaf")
		p := newPolicy(t, Require, root)
		if v := p.Verify(caList(leaf)); v.Reason != ReasonUntrusted {
			t.Fatalf("leaf alone: %+v", v)
		}
		if v := p.Verify(caList(leaf, inter)); v.Result != Success {
			t.Fatalf("leaf with intermediate after a cached failure of the leaf alone: %+v", v)
		}
		if v := p.Verify(caList(leaf)); v.Reason != ReasonUntrusted {
			t.Fatalf("leaf alone after a cached success with intermediate: %+v", v)
		}
	})

	t.Run("policies do not share a cache", func(t *testing.T) {
		t.Parallel()
		a, b := newPolicy(t, Require, f.zoneCA), newPolicy(t, Require, f.hostCA)
		chain := caList(f.zoneLeaf)
		if v := a.Verify(chain); v.Result != Success {
			t.Fatal(v)
		}
		if v := b.Verify(chain); v.Reason != ReasonUntrusted {
			t.Fatalf("second policy: %+v", v)
		}
	})

	t.Run("bounded", func(t *testing.T) {
		t.Parallel()
		p := newPolicy(t, Require, f.zoneCA)
		// Distinct leaves from a CA the policy does not trust: cheap to
		// verify, one cache entry each.
		ca := f.otherCA
		key := f.untrusted.Key
		tmpl := &x509.Certificate{
			Subject:     pkix.Name{CommonName: "scanner"},
			NotBefore:   time.Now().Add(-time.Hour),
			NotAfter:    time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		n := maxCacheEntries + 100
		var last []*x509.Certificate
		for i := 0; i < n; i++ {
			tmpl.SerialNumber = big.NewInt(int64(1_000_000 + i))
			der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
			if err != nil {
				t.Fatal(err)
			}
			c, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			last = []*x509.Certificate{c}
			if v := p.Verify(last); v.Reason != ReasonUntrusted {
				t.Fatalf("leaf %d: %+v", i, v)
			}
		}
		p.cache.mu.RLock()
		size := len(p.cache.m)
		p.cache.mu.RUnlock()
		if size > maxCacheEntries || size < maxCacheEntries-1 {
			t.Errorf("cache holds %d entries after %d distinct chains, want %d", size, n, maxCacheEntries)
		}
		if _, ok := p.cache.get(chainKey(last), time.Now()); !ok {
			t.Error("the newest entry was evicted")
		}
	})
}

// A CA that is not yet valid (a new CA issued moments ago on a machine whose
// clock is ahead, say) fails verification with the same x509.Expired code as
// an expired one. Verify must neither call that "expired" nor cache it for
// the Policy's lifetime: once the CA becomes valid its leaves must pass.
func TestVerifyNotYetValidCA(t *testing.T) {
	t.Parallel()
	now := time.Now()
	future := testpki.New(t, nil, testpki.Options{CN: "future CA", IsCA: true, NotBefore: now.Add(time.Hour), NotAfter: now.Add(365 * 24 * time.Hour)})
	leaf := testpki.New(t, future, testpki.Options{CN: "leaf", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour)})
	p := newPolicy(t, Require, future)
	chain := caList(leaf)

	v := p.Verify(chain)
	if v.Result != Failed {
		t.Fatalf("Verify = %+v, want a failure", v)
	}
	if later := p.verify(chain, future.Cert.NotBefore.Add(time.Minute)); later.result != Success {
		t.Fatalf("after the CA's NotBefore a fresh check gives %+v; test setup is wrong", later)
	}
	t.Run("reason", func(t *testing.T) {
		if v.Reason != ReasonNotYetValid {
			t.Errorf("Reason = %q, want %q: the CA is not yet valid, not expired", v.Reason, ReasonNotYetValid)
		}
	})
	t.Run("not cached past the CA's NotBefore", func(t *testing.T) {
		if e, ok := p.cache.get(chainKey(chain), future.Cert.NotBefore.Add(time.Minute)); ok {
			t.Errorf("cache entry %+v (until %v) is still served after the CA became valid: the policy would refuse this client until the next reload", e, e.until)
		}
	})
}

// TestOutcomesCoverEveryVerdict: Outcomes lists every (result, reason)
// pair a policy can produce, each once and in its counter's slot; the
// exported evidence counters are derived from it.
func TestOutcomesCoverEveryVerdict(t *testing.T) {
	t.Parallel()
	want := []Verdict{{Result: Success}, {Result: None}, {Result: None, Reason: ReasonMissing}, {Result: None, Reason: ReasonNeedsTLS13}}
	for _, r := range FailureReasons {
		want = append(want, Verdict{Result: Failed, Reason: r})
	}
	got := Outcomes()
	if len(got) != len(want) {
		t.Fatalf("Outcomes() has %d entries, want %d", len(got), len(want))
	}
	for i, v := range want {
		if got[i].Result != v.Result || got[i].Reason != v.Reason {
			t.Errorf("Outcomes()[%d] = %s/%s, want %s/%s", i, got[i].Result, got[i].Reason, v.Result, v.Reason)
		}
		if o := outcome(v); o != i {
			t.Errorf("outcome(%s/%s) = %d, want %d", v.Result, v.Reason, o, i)
		}
	}
}
