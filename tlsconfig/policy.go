// Package tlsconfig decides who is let in. A Policy is one client-certificate
// rule (the zone's, or one hostname's) compiled once into its own tls.Config;
// a Set picks the Policy for a TLS server name or HTTP Host; a Server drives
// TLS handshakes so that every accepted connection carries the Policy and the
// Verdict it was admitted under.
package tlsconfig

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/aopguard/aopguard/certs"
	"github.com/aopguard/aopguard/cfips"
)

// Mode is how strictly a Policy enforces client certificates.
type Mode uint8

const (
	// Off asks for no client certificate.
	Off Mode = iota
	// LogOnly asks for and verifies a certificate but never refuses a
	// connection for it: the staged-rollout step before Require.
	LogOnly
	// Require refuses, at the handshake, any connection without a
	// certificate that verifies against the Policy's CAs.
	Require
)

var modeNames = [...]string{Off: "off", LogOnly: "log-only", Require: "require"}

func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("Mode(%d)", m)
}

// ParseMode parses "off", "log-only" or "require".
func ParseMode(s string) (Mode, error) {
	for m, n := range modeNames {
		if s == n {
			return Mode(m), nil
		}
	}
	return 0, fmt.Errorf("%q is not one of off, log-only, require", s)
}

// Signatures is which client certificates a Policy accepts by their
// signature algorithms: the staged switch to post-quantum Authenticated
// Origin Pulls.
type Signatures uint8

const (
	// AnySignatures accepts classical (RSA, ECDSA, Ed25519) and
	// post-quantum (ML-DSA) certificates alike: the default.
	AnySignatures Signatures = iota
	// PostQuantum accepts only certificates whose leaf key is ML-DSA and
	// whose every signature up to the trusted root is ML-DSA; anything
	// else fails with ReasonClassical. An attacker holding a broken
	// classical key then cannot get in, which is the point of switching.
	PostQuantum
)

var signaturesNames = [...]string{AnySignatures: "any", PostQuantum: "post-quantum"}

func (s Signatures) String() string {
	if int(s) < len(signaturesNames) {
		return signaturesNames[s]
	}
	return fmt.Sprintf("Signatures(%d)", s)
}

// ParseSignatures parses "any" or "post-quantum".
func ParseSignatures(s string) (Signatures, error) {
	for v, n := range signaturesNames {
		if s == n {
			return Signatures(v), nil
		}
	}
	return 0, fmt.Errorf("%q is not one of any, post-quantum", s)
}

// Result is the outcome of checking a client certificate.
type Result uint8

const (
	// None: no certificate was presented, or the Policy does not check one.
	None Result = iota
	// Success: the certificate chains to the Policy's CAs, is within its
	// validity period and allows client authentication.
	Success
	// Failed: a certificate was presented and did not verify.
	Failed
)

var resultNames = [...]string{None: "none", Success: "success", Failed: "failed"}

func (r Result) String() string { return resultNames[r] }

// Action is what a Policy does with a Verdict.
type Action uint8

const (
	// Allow lets the request through.
	Allow Action = iota
	// Reject refuses it (Require mode).
	Reject
	// WouldReject lets it through but records that Require would not
	// (LogOnly mode): the number to watch before enforcing.
	WouldReject
)

var actionNames = [...]string{Allow: "allow", Reject: "reject", WouldReject: "would_reject"}

func (a Action) String() string { return actionNames[a] }

// Reasons a certificate fails; they appear in logs and in the upstream's
// X-Client-Verify header as FAILED:<reason>.
const (
	ReasonMissing     = "missing"
	ReasonUntrusted   = "untrusted"
	ReasonExpired     = "expired"
	ReasonNotYetValid = "not_yet_valid"
	ReasonWrongUsage  = "wrong_usage"
	ReasonInvalid     = "invalid"
	// ReasonZoneCertOnHost: the chain does not verify under a host's own
	// CA but does under the zone's: Cloudflare is sending the zone
	// certificate because per-hostname AOP is not (yet) enabled for it.
	ReasonZoneCertOnHost = "zone_cert_on_host"
	// ReasonRevoked: the leaf (or an intermediate) is on a CRL of the policy.
	ReasonRevoked = "revoked"
	// ReasonNotAllowed: the chain verified but the leaf matches none of
	// the policy's allow rules.
	ReasonNotAllowed = "not_allowed"
	// ReasonClassical: under PostQuantum, the chain verified but its leaf
	// key or one of its signatures is classical (not ML-DSA).
	ReasonClassical = "classical"
	// ReasonNeedsTLS13: under PostQuantum, a connection that negotiated
	// TLS 1.2 presented no certificate. ML-DSA certificates can only be
	// presented over TLS 1.3 (a TLS 1.2 client holding one sends none),
	// so such a connection can never pass; a None verdict like missing.
	ReasonNeedsTLS13 = "needs_tls13"
	// ReasonCRLStale: the chain verified but a CRL of the policy is past
	// its NextUpdate, and the policy refuses on a stale CRL.
	ReasonCRLStale = "crl_stale"
)

// FailureReasons lists every Reason of a Failed verdict.
var FailureReasons = []string{ReasonUntrusted, ReasonExpired, ReasonNotYetValid, ReasonWrongUsage, ReasonInvalid,
	ReasonZoneCertOnHost, ReasonRevoked, ReasonNotAllowed, ReasonClassical, ReasonCRLStale}

// postQuantumOnly reports whether a reason only arises under PostQuantum.
func postQuantumOnly(reason string) bool {
	return reason == ReasonClassical || reason == ReasonNeedsTLS13
}

// outcome indexes a verdict for counters: success, none (no reason),
// missing, needs_tls13, then FailureReasons in order.
func outcome(v Verdict) int {
	switch {
	case v.Result == Success:
		return 0
	case v.Result == None && v.Reason == "":
		return 1
	case v.Result == None && v.Reason == ReasonNeedsTLS13:
		return 3
	case v.Result == None:
		return 2
	}
	for i, r := range FailureReasons {
		if r == v.Reason {
			return 4 + i
		}
	}
	return numOutcomes // not counted; unreachable for verdicts Verify makes
}

// outcomeVerdict is the inverse of outcome, for resolving counters.
func outcomeVerdict(i int) Verdict {
	switch i {
	case 0:
		return Verdict{Result: Success}
	case 1:
		return Verdict{Result: None}
	case 2:
		return Verdict{Result: None, Reason: ReasonMissing}
	case 3:
		return Verdict{Result: None, Reason: ReasonNeedsTLS13}
	}
	return Verdict{Result: Failed, Reason: FailureReasons[i-4]}
}

// Outcomes returns every verdict (Result and Reason only) a Policy can
// reach, in the order of its counters: success, none, none/missing,
// none/needs_tls13, then failed/<each of FailureReasons>. It is the one
// list whatever counts or exports outcomes must derive from, so a new
// reason cannot be silently dropped by one of them.
func Outcomes() []Verdict {
	out := make([]Verdict, numOutcomes)
	for i := range out {
		out[i] = outcomeVerdict(i)
	}
	return out
}

// numOutcomes is 4 + len(FailureReasons); the init check keeps them in step.
const numOutcomes = 14

func init() {
	if 4+len(FailureReasons) != numOutcomes {
		panic("tlsconfig: numOutcomes does not match FailureReasons")
	}
}

// Verdict is the outcome of checking one certificate chain under one Policy.
type Verdict struct {
	Result Result
	// Reason says why Result is not Success ("" on success, and for None
	// under an Off policy).
	Reason string
	// Fingerprint is the lowercase hex SHA-256 of the leaf's DER, and
	// Serial its serial number in hex; both empty when no certificate was
	// presented.
	Fingerprint string
	Serial      string
	// Subject is the leaf's common name (or DN), for logs.
	Subject string
	// Signature is the algorithm of the issuer's signature on the leaf
	// (x509.UnknownSignatureAlgorithm when none was presented).
	Signature x509.SignatureAlgorithm
	// PostQuantum reports a chain that verified with an ML-DSA leaf key and
	// ML-DSA signatures all the way to the trusted root: what a PostQuantum
	// policy accepts. It is set under AnySignatures too, so the rollout
	// report can tell when switching is safe.
	PostQuantum bool
}

// Header returns the X-Client-Verify value for the Verdict.
func (v Verdict) Header() string {
	switch v.Result {
	case Success:
		return "SUCCESS"
	case Failed:
		return "FAILED:" + v.Reason
	}
	return "NONE"
}

// Counter is the one method of a metric counter a Policy needs; label
// resolution happens once, when the Policy is built.
type Counter interface{ Inc() }

// Labels name one verification counter.
type Labels struct {
	Host, Mode, Result, Reason, Action, Source string
}

// PolicySpec describes a Policy before it is compiled.
type PolicySpec struct {
	// Name is "_zone" for the zone policy, or a configured host name: an
	// exact name or "*.example.com".
	Name string
	Mode Mode
	// Signatures is AnySignatures (the default) or PostQuantum.
	Signatures Signatures
	// CAs are the roots a client certificate must chain to. Required
	// unless Mode is Off.
	CAs []*x509.Certificate
	// Upstream is where requests under this policy go; tlsconfig only
	// carries it so that routing and admission come from one snapshot.
	Upstream string
	// Allow narrows the accepted leaves further (optional).
	Allow AllowRules
	// CRLs revoke certificates; each must be signed by one of CAs.
	CRLs []*x509.RevocationList
	// RefuseStaleCRL refuses every client certificate (ReasonCRLStale)
	// while a CRL is past its NextUpdate; otherwise a stale CRL is still
	// used, and CRLNextUpdate lets the caller log and count it.
	RefuseStaleCRL bool
}

// Policy is a compiled PolicySpec. It is immutable once built and safe for
// concurrent use; a reload builds new Policies instead of changing these.
type Policy struct {
	name     string
	mode     Mode
	sigs     Signatures
	cas      []*x509.Certificate
	upstream string
	index    int
	roots    *x509.CertPool
	tls      *tls.Config
	cache    verifyCache
	flight   singleflight.Group
	counters [numOutcomes][2]Counter // [outcome][source: Cloudflare, other]
	// zoneRoots is set for a host policy with a CA of its own, to tell
	// "untrusted" from "zone_cert_on_host".
	zoneRoots *x509.CertPool
	allow     AllowRules
	revoked   revocations
	// crlNextUpdate is the earliest NextUpdate of the policy's CRLs (zero
	// without CRLs, or when none gives one); refuseStale acts on it.
	crlNextUpdate time.Time
	refuseStale   bool
}

// CRLNextUpdate returns the earliest NextUpdate of the policy's CRLs: past
// it, the policy is working from a stale CRL. Zero when there is none.
func (p *Policy) CRLNextUpdate() time.Time { return p.crlNextUpdate }

// RefusesStaleCRL reports whether a stale CRL refuses every client
// certificate of the policy (crl_stale: refuse).
func (p *Policy) RefusesStaleCRL() bool { return p.refuseStale }

// Name returns "_zone" or the configured host name.
func (p *Policy) Name() string { return p.name }

// Mode returns the enforcement mode.
func (p *Policy) Mode() Mode { return p.mode }

// Signatures returns which certificate signatures the Policy accepts.
func (p *Policy) Signatures() Signatures { return p.sigs }

// CAs returns the trusted roots; callers must not modify them.
func (p *Policy) CAs() []*x509.Certificate { return p.cas }

// Upstream returns the configured upstream URL.
func (p *Policy) Upstream() string { return p.upstream }

// Index is the Policy's position in its Set (the zone is 0), for callers
// that keep per-policy data in a slice.
func (p *Policy) Index() int { return p.index }

// TLSConfig returns the compiled server configuration. It is shared by
// every handshake under this Policy and must not be modified.
func (p *Policy) TLSConfig() *tls.Config { return p.tls }

// ActionFor returns what the Policy does with v.
func (p *Policy) ActionFor(v Verdict) Action {
	if p.mode == Off || v.Result == Success {
		return Allow
	}
	if p.mode == Require {
		return Reject
	}
	return WouldReject
}

// Count records v, for a peer of the given source (cfips.Cloudflare or
// cfips.Other), in the Policy's verification counter.
func (p *Policy) Count(v Verdict, source string) {
	o := outcome(v)
	if o >= numOutcomes {
		return
	}
	src := 1
	if source == cfips.Cloudflare {
		src = 0
	}
	if c := p.counters[o][src]; c != nil {
		c.Inc()
	}
}

// Verify checks a presented chain (leaf first, as in
// tls.ConnectionState.PeerCertificates) against the Policy. Results are
// cached per chain, so the expensive signature checks run once per distinct
// certificate rather than once per handshake; the cache honours validity
// periods and dies with the Policy on reload.
func (p *Policy) Verify(chain []*x509.Certificate) Verdict {
	if len(chain) == 0 {
		if p.mode == Off {
			return Verdict{Result: None}
		}
		return Verdict{Result: None, Reason: ReasonMissing}
	}
	leaf := chain[0]
	sum := sha256.Sum256(leaf.Raw)
	if p.mode == Off {
		return Verdict{Result: None, Fingerprint: hex.EncodeToString(sum[:]), Serial: leaf.SerialNumber.Text(16), Subject: certs.Describe(leaf),
			Signature: leaf.SignatureAlgorithm}
	}
	key := sum
	if len(chain) > 1 {
		h := sha256.New()
		h.Write(sum[:])
		for _, c := range chain[1:] {
			h.Write(c.Raw)
		}
		h.Sum(key[:0])
	}
	now := time.Now()
	if e, ok := p.cache.get(key, now); ok {
		return e.verdict()
	}
	// Concurrent handshakes presenting the same new chain (Cloudflare
	// opening many connections right after a reload) share one check.
	r, _, _ := p.flight.Do(string(key[:]), func() (any, error) {
		e := p.verify(chain, now)
		// The leaf's descriptions go into the entry too, so that a hit
		// (every handshake but the first) formats nothing and allocates
		// nothing; connections share the strings.
		e.fingerprint, e.serial, e.subject = hex.EncodeToString(sum[:]), leaf.SerialNumber.Text(16), certs.Describe(leaf)
		e.signature = leaf.SignatureAlgorithm
		p.cache.put(key, e)
		return e, nil
	})
	return r.(cacheEntry).verdict()
}

func (p *Policy) verify(chain []*x509.Certificate, now time.Time) cacheEntry {
	opts := x509.VerifyOptions{
		Roots:       p.roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if len(chain) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range chain[1:] {
			opts.Intermediates.AddCert(c)
		}
	}
	leaf := chain[0]
	chains, err := leaf.Verify(opts)
	if err == nil {
		until := leaf.NotAfter
		for _, c := range chains[0] {
			if c.NotAfter.Before(until) {
				until = c.NotAfter
			}
		}
		pq := postQuantumChain(chains)
		stale := !p.crlNextUpdate.IsZero() && !now.Before(p.crlNextUpdate)
		switch {
		case p.revoked.revoked(chains[0]):
			return cacheEntry{result: Failed, reason: ReasonRevoked, pq: pq}
		case p.sigs == PostQuantum && !pq:
			return cacheEntry{result: Failed, reason: ReasonClassical, until: until}
		case !p.allow.Match(leaf):
			return cacheEntry{result: Failed, reason: ReasonNotAllowed, pq: pq}
		case stale && p.refuseStale:
			return cacheEntry{result: Failed, reason: ReasonCRLStale, pq: pq}
		}
		if !stale && p.refuseStale && p.crlNextUpdate.Before(until) {
			until = p.crlNextUpdate // judged again once the CRL goes stale
		}
		return cacheEntry{result: Success, until: until, pq: pq}
	}
	e := cacheEntry{result: Failed, reason: ReasonInvalid}
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, new(x509.UnknownAuthorityError)):
		e.reason = ReasonUntrusted
		if p.zoneRoots != nil {
			opts.Roots = p.zoneRoots
			if _, zerr := leaf.Verify(opts); zerr == nil {
				e.reason = ReasonZoneCertOnHost
			}
		}
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		// crypto/x509 says "expired" for both ends of a validity period,
		// for any certificate of the chain. Nothing presented has passed
		// its end: something (the leaf, an intermediate or a root) is not
		// valid yet, so re-check once the next one becomes valid.
		e.reason = ReasonExpired
		if !anyExpired(chain, now) {
			if next := nextNotBefore(now, chain, p.cas); !next.IsZero() {
				e.reason, e.until = ReasonNotYetValid, next
			}
		}
	case errors.As(err, &invalid) && invalid.Reason == x509.IncompatibleUsage:
		e.reason = ReasonWrongUsage
	}
	return e
}

// postQuantumChain reports whether one of the verified chains is
// post-quantum throughout: an ML-DSA leaf key (which signs the TLS
// handshake) and an ML-DSA signature on every certificate below the root
// (the root is the trust anchor: its own signature proves nothing).
func postQuantumChain(chains [][]*x509.Certificate) bool {
	for _, chain := range chains {
		if chain[0].PublicKeyAlgorithm != x509.MLDSA {
			continue
		}
		pq := true
		for _, c := range chain[:len(chain)-1] {
			pq = pq && certs.PostQuantumSignature(c.SignatureAlgorithm)
		}
		if pq {
			return true
		}
	}
	return false
}

// VerifyTLS is Verify for a chain presented over a connection that
// negotiated version: under PostQuantum, a TLS 1.2 connection without a
// certificate gets ReasonNeedsTLS13 rather than ReasonMissing, since an
// ML-DSA certificate cannot be presented below TLS 1.3.
func (p *Policy) VerifyTLS(chain []*x509.Certificate, version uint16) Verdict {
	v := p.Verify(chain)
	if v.Reason == ReasonMissing && p.sigs == PostQuantum && version != 0 && version < tls.VersionTLS13 {
		v.Reason = ReasonNeedsTLS13
	}
	return v
}

func anyExpired(chain []*x509.Certificate, now time.Time) bool {
	for _, c := range chain {
		if now.After(c.NotAfter) {
			return true
		}
	}
	return false
}

// nextNotBefore returns the earliest start of validity after now among
// the given certificates (zero if none starts in the future).
func nextNotBefore(now time.Time, lists ...[]*x509.Certificate) time.Time {
	var next time.Time
	for _, l := range lists {
		for _, c := range l {
			if c.NotBefore.After(now) && (next.IsZero() || c.NotBefore.Before(next)) {
				next = c.NotBefore
			}
		}
	}
	return next
}

// verifyConnection is the tls.Config hook for Require policies: it refuses
// the handshake (full or resumed) unless the chain verifies now, under this
// Policy. LogOnly and Off policies judge after the handshake instead.
func (p *Policy) verifyConnection(cs tls.ConnectionState) error {
	v := p.VerifyTLS(cs.PeerCertificates, cs.Version)
	if v.Result != Success {
		return &RejectError{Policy: p, Verdict: v}
	}
	return nil
}

// RejectError is the handshake error of a connection a Require policy
// refused.
type RejectError struct {
	Policy  *Policy
	Verdict Verdict
}

func (e *RejectError) Error() string {
	return fmt.Sprintf("aopguard: policy %s (%s): client certificate %s", e.Policy.name, e.Policy.mode, e.Verdict.Reason)
}

// maxCacheEntries bounds the per-policy verification cache; a scanner
// presenting endless distinct certificates evicts entries instead of
// growing memory.
const maxCacheEntries = 4096

type cacheEntry struct {
	result Result
	reason string
	until  time.Time // zero: valid for the Policy's lifetime
	pq     bool
	// The leaf's Verdict fields, formatted once.
	fingerprint, serial, subject string
	signature                    x509.SignatureAlgorithm
}

func (e cacheEntry) verdict() Verdict {
	return Verdict{Result: e.result, Reason: e.reason, Fingerprint: e.fingerprint, Serial: e.serial, Subject: e.subject,
		Signature: e.signature, PostQuantum: e.pq}
}

type verifyCache struct {
	mu sync.RWMutex
	m  map[[32]byte]cacheEntry
}

func (c *verifyCache) get(k [32]byte, now time.Time) (cacheEntry, bool) {
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok || (!e.until.IsZero() && !now.Before(e.until)) {
		return cacheEntry{}, false
	}
	return e, true
}

func (c *verifyCache) put(k [32]byte, e cacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[[32]byte]cacheEntry)
	}
	if len(c.m) >= maxCacheEntries {
		for old := range c.m { // map order is random: evict an arbitrary entry
			delete(c.m, old)
			break
		}
	}
	c.m[k] = e
}

// normalize lower-cases a server or host name and drops a trailing dot.
func normalize(name string) string {
	name = strings.TrimSuffix(name, ".")
	return strings.ToLower(name)
}
