package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/aopguard/aopguard/certs"
	"github.com/aopguard/aopguard/cfips"
	"github.com/aopguard/aopguard/metrics"
	"github.com/aopguard/aopguard/proxy"
	"github.com/aopguard/aopguard/rollout"
	"github.com/aopguard/aopguard/tlsconfig"
)

// source classifies a peer address against the current Cloudflare ranges.
func (a *app) source(addr netip.Addr) string {
	if a.ips.Load().Contains(addr) {
		return cfips.Cloudflare
	}
	return cfips.Other
}

func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "1.3"
	case tls.VersionTLS12:
		return "1.2"
	}
	return "unknown"
}

// sink is where every verdict is recorded: the TLS server reports each
// handshake to it and the proxy each request (tlsconfig.Sink). From it
// the verdict counters, the other handshake and request metrics, the
// rollout report (and its exported evidence counters), the client
// certificates seen and the handshake log lines are fed.
type sink struct{ a *app }

// Handshake counts and logs each handshake: refused and failed ones here,
// admitted ones in the access lines of their requests.
func (s sink) Handshake(h tlsconfig.Handshake) {
	if p, v, ok := h.Judged(); ok {
		p.Count(v, h.Info.Source)
	}
	s.a.observeHandshake(h.Info, h.Remote, h.Err)
}

// Request counts a request's verdict when the request was judged anew,
// and feeds it to the rollout report.
func (s sink) Request(r tlsconfig.Request) {
	if r.Rejudged {
		r.Policy.Count(r.Verdict, r.Conn.Source)
	}
	s.a.observeRequest(r)
}

func (a *app) observeHandshake(info *tlsconfig.ConnInfo, remote net.Addr, err error) {
	host := "_none" // the handshake failed before a policy was chosen
	if info.Policy != nil {
		host = info.Policy.Name()
	}
	var rej *tlsconfig.RejectError
	var unknown *tlsconfig.UnknownHostError
	var refused *tlsconfig.RefusedError
	switch {
	case errors.As(err, &refused):
		a.metrics.Refused(refused.Reason)
		if refused.Log {
			lvl := zerolog.DebugLevel
			switch refused.Reason {
			case tlsconfig.RefusedProxyUntrusted, tlsconfig.RefusedProxyMissing, tlsconfig.RefusedProxyInvalid:
				lvl = zerolog.WarnLevel
			case tlsconfig.RefusedPlainHTTP:
				lvl = zerolog.InfoLevel
			}
			a.log.WithLevel(lvl).Str("peer", refused.Peer.String()).Str("reason", refused.Reason).Err(refused.Err).
				Msg("connection refused before TLS (logged once a minute per peer and reason)")
		}
	case err == nil:
		a.metrics.Handshake(host, tlsVersion(info.Version), info.Resumed, "ok")
		a.observeAlgorithms(info.Policy, info, info.Verdict)
		if info.Verdict.Result == tlsconfig.Success {
			a.clients.seen(info.Policy.Name(), info.Peer[0], info.Verdict.Fingerprint, info.Source)
		}
		if info.Policy.ActionFor(info.Verdict) == tlsconfig.WouldReject {
			a.log.Warn().Str("remote", remote.String()).Str("source", info.Source).Str("sni", proxy.Clip(info.SNI)).
				Str("policy", info.Policy.Name()).Str("mode", info.Policy.Mode().String()).Str("reason", info.Verdict.Reason).
				Str("fingerprint", info.Verdict.Fingerprint).Str("subject", info.Verdict.Subject).
				Msg("client certificate would be refused under require (log-only: admitted)")
		}
	case errors.As(err, &rej):
		a.metrics.Handshake(host, tlsVersion(info.Version), info.Resumed, "refused")
		a.observeAlgorithms(rej.Policy, info, rej.Verdict)
		a.recordEvidence(rollout.Event{Policy: rej.Policy.Name(), Result: rej.Verdict.Result.String(),
			Reason: rej.Verdict.Reason, Source: info.Source, Remote: info.Remote})
		a.log.Warn().Str("remote", remote.String()).Str("source", info.Source).Str("sni", proxy.Clip(info.SNI)).
			Str("policy", rej.Policy.Name()).Str("mode", rej.Policy.Mode().String()).Str("reason", rej.Verdict.Reason).
			Str("fingerprint", rej.Verdict.Fingerprint).Str("subject", rej.Verdict.Subject).
			Msg("handshake refused: client certificate not accepted")
	case errors.Is(err, tlsconfig.ErrACMEChallenge):
		a.log.Info().Str("remote", remote.String()).Str("sni", proxy.Clip(info.SNI)).Msg("served an ACME tls-alpn-01 challenge")
	case errors.As(err, &unknown):
		a.metrics.Handshake(host, "unknown", false, "refused")
		a.log.Info().Str("remote", remote.String()).Str("source", info.Source).Str("sni", proxy.Clip(info.SNI)).
			Msg("handshake refused: server name matches no configured host")
	default:
		a.metrics.HandshakeError()
		a.metrics.Handshake(host, "unknown", false, "error")
		a.log.Debug().Str("remote", remote.String()).Str("source", info.Source).Str("sni", proxy.Clip(info.SNI)).Err(err).Msg("tls handshake failed")
	}
}

// observeAlgorithms counts a handshake judged under p by key agreement and
// certificate signature, and feeds the post-quantum evidence of the rollout
// report: of the chains that verified (or would have, but for being
// classical under post-quantum), how many were ML-DSA throughout and came
// with post-quantum key agreement.
func (a *app) observeAlgorithms(p *tlsconfig.Policy, info *tlsconfig.ConnInfo, v tlsconfig.Verdict) {
	a.metrics.HandshakeAlgorithms(p.Name(), tlsconfig.KeyAgreementName(info.CurveID), tlsconfig.SignatureName(v))
	if v.Result == tlsconfig.Success || v.Reason == tlsconfig.ReasonClassical {
		a.tracker.RecordHandshake(rollout.Handshake{Policy: p.Name(), Source: info.Source,
			MLDSA: v.PostQuantum, PostQuantumKeyAgreement: tlsconfig.PostQuantumKeyAgreement(info.CurveID)})
	}
}

// observeRequest feeds every answered request to the rollout report.
func (a *app) observeRequest(ri tlsconfig.Request) {
	result := ri.Verdict.Result.String()
	if ri.HealthCheck {
		a.metrics.HealthCheck(ri.Policy.Name(), result)
	}
	a.recordEvidence(rollout.Event{Policy: ri.Policy.Name(), Result: result, Reason: ri.Verdict.Reason,
		Source: ri.Conn.Source, Remote: ri.Conn.Remote, HealthCheck: ri.HealthCheck})
}

// evidenceKey names one rollout evidence counter of a policy.
type evidenceKey struct{ policy, result, reason, source string }

// evidenceCounters are the running policies' evidence counters, resolved
// when they are loaded.
type evidenceCounters map[evidenceKey]prometheus.Counter

// recordEvidence gives one event to the rollout report and to its
// exported counter (health checks have their own).
func (a *app) recordEvidence(e rollout.Event) {
	a.tracker.Record(e)
	if e.HealthCheck {
		return
	}
	if m := a.evidence.Load(); m != nil {
		if c := (*m)[evidenceKey{e.Policy, e.Result, e.Reason, e.Source}]; c != nil {
			c.Inc()
		}
	}
}

// maxClientLeaves bounds the client certificates remembered per policy for
// the expiry gauge and warnings; the least recently seen is forgotten.
const maxClientLeaves = 10

// clientLeaves remembers verified client certificates seen recently, so
// their expiry can be reported and warned about like loaded certificates.
type clientLeaves struct {
	mu      sync.Mutex
	metrics *metrics.Metrics
	onNew   func(role, host string, c *x509.Certificate)
	byHost  map[string][]clientLeaf // most recently seen first
}

type clientLeaf struct {
	fingerprint string
	cert        *x509.Certificate
	// fromCloudflare is when a connection from Cloudflare's ranges last
	// presented it (zero: never), for "aopguard cloudflare rotate".
	fromCloudflare time.Time
}

// seen records a verified leaf; fp is its fingerprint, already computed
// for the verdict, and source the peer's (cfips.Cloudflare or not).
func (cl *clientLeaves) seen(host string, leaf *x509.Certificate, fp, source string) {
	var cf time.Time
	if source == cfips.Cloudflare {
		cf = time.Now()
	}
	cl.mu.Lock()
	list := cl.byHost[host]
	for i, l := range list {
		if l.fingerprint == fp {
			copy(list[1:i+1], list[:i])
			if !cf.IsZero() {
				l.fromCloudflare = cf
			}
			list[0] = l
			cl.mu.Unlock()
			return
		}
	}
	list = append([]clientLeaf{{fp, leaf, cf}}, list...)
	var dropped *clientLeaf
	if len(list) > maxClientLeaves {
		dropped = &list[maxClientLeaves]
		list = list[:maxClientLeaves]
	}
	cl.byHost[host] = list
	forget := dropped != nil
	for _, l := range list {
		// The series is labelled by subject: a renewed certificate often
		// keeps its predecessor's, and must keep its series.
		if forget && certs.Describe(l.cert) == certs.Describe(dropped.cert) {
			forget = false
		}
	}
	cl.mu.Unlock()
	if forget {
		cl.metrics.ForgetClientExpiry(host, certs.Describe(dropped.cert))
	}
	cl.metrics.ClientExpiry(host, certs.Describe(leaf), float64(leaf.NotAfter.Unix()))
	cl.onNew("client", host, leaf)
}

// recent returns copies of the leaves recently verified under policy host,
// most recent first (at most maxClientLeaves).
func (cl *clientLeaves) recent(host string) []clientLeaf {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return append([]clientLeaf(nil), cl.byHost[host]...)
}

func (cl *clientLeaves) each(f func(host string, c *x509.Certificate)) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for host, list := range cl.byHost {
		for _, l := range list {
			f(host, l.cert)
		}
	}
}

// Expiry warning thresholds: Cloudflare's own AOP alerts fire 30 and 14
// days ahead; the embedded Cloudflare CA needs a new aopguard release, so
// it is flagged half a year ahead.
const (
	warnDays           = 30
	urgentDays         = 14
	embeddedCAWarnDays = 180
)

// warnExpiry logs a warning for a certificate inside its warning window,
// and an error for an expired one. Called for every certificate at each
// load and once a day, so the warnings repeat daily.
func warnExpiry(log zerolog.Logger, now time.Time, role, host string, c *x509.Certificate) {
	left := c.NotAfter.Sub(now)
	days := int(left.Hours() / 24)
	threshold := warnDays
	if c.Equal(certs.CloudflareOriginPullCA()) {
		threshold = embeddedCAWarnDays
	}
	var e *zerolog.Event
	switch {
	case left <= 0:
		e = log.Error()
	case days < urgentDays:
		e = log.Warn().Int("threshold_days", urgentDays)
	case days < threshold:
		e = log.Warn().Int("threshold_days", threshold)
	default:
		return
	}
	e = e.Str("role", role).Str("host", host).Str("subject", certs.Describe(c)).
		Str("fingerprint", certs.Fingerprint(c.Raw)).Time("not_after", c.NotAfter).Int("days_left", days)
	if left <= 0 {
		e.Msg("certificate has expired")
		return
	}
	e.Msg("certificate expires soon")
}

// checkExpiries warns about every loaded and recently seen certificate.
func (a *app) checkExpiries() {
	now := time.Now()
	for _, e := range a.expiries() {
		warnExpiry(a.log, now, e.Role, e.Host, e.Cert)
	}
	a.clients.each(func(host string, c *x509.Certificate) { warnExpiry(a.log, now, "client", host, c) })
	a.checkCRLs(now)
}
