package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

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

// observeHandshake counts and logs each handshake: refused and failed ones
// here, admitted ones in the access lines of their requests.
func (a *app) observeHandshake(info *tlsconfig.ConnInfo, remote net.Addr, err error) {
	host := "_none" // the handshake failed before a policy was chosen
	if info.Policy != nil {
		host = info.Policy.Name()
	}
	var rej *tlsconfig.RejectError
	var unknown *tlsconfig.UnknownHostError
	switch {
	case err == nil:
		a.metrics.Handshake(host, tlsVersion(info.Version), info.Resumed, "ok")
		if info.Verdict.Result == tlsconfig.Success {
			a.clients.seen(info.Policy.Name(), info.Peer[0], info.Verdict.Fingerprint)
		}
		if info.Policy.ActionFor(info.Verdict) == tlsconfig.WouldReject {
			a.log.Warn().Str("remote", remote.String()).Str("source", info.Source).Str("sni", proxy.Clip(info.SNI)).
				Str("policy", info.Policy.Name()).Str("mode", info.Policy.Mode().String()).Str("reason", info.Verdict.Reason).
				Str("fingerprint", info.Verdict.Fingerprint).Str("subject", info.Verdict.Subject).
				Msg("client certificate would be refused under require (log-only: admitted)")
		}
	case errors.As(err, &rej):
		a.metrics.Handshake(host, tlsVersion(info.Version), info.Resumed, "refused")
		a.tracker.Record(rollout.Event{Policy: rej.Policy.Name(), Result: rej.Verdict.Result.String(),
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

// observeRequest feeds every answered request to the rollout report.
func (a *app) observeRequest(ri proxy.RequestInfo) {
	result := ri.Verdict.Result.String()
	if ri.HealthCheck {
		a.metrics.HealthCheck(ri.Policy.Name(), result)
	}
	a.tracker.Record(rollout.Event{Policy: ri.Policy.Name(), Result: result, Reason: ri.Verdict.Reason,
		Source: ri.Conn.Source, Remote: ri.Conn.Remote, HealthCheck: ri.HealthCheck})
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
}

// seen records a verified leaf; fp is its fingerprint, already computed
// for the verdict.
func (cl *clientLeaves) seen(host string, leaf *x509.Certificate, fp string) {
	cl.mu.Lock()
	list := cl.byHost[host]
	for i, l := range list {
		if l.fingerprint == fp {
			copy(list[1:i+1], list[:i])
			list[0] = l
			cl.mu.Unlock()
			return
		}
	}
	list = append([]clientLeaf{{fp, leaf}}, list...)
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
