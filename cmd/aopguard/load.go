package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/rs/zerolog"
	"go.uber.org/zap/zapcore"

	"github.com/aopguard/aopguard/certs"
	"github.com/aopguard/aopguard/cfips"
	"github.com/aopguard/aopguard/config"
	"github.com/aopguard/aopguard/metrics"
	"github.com/aopguard/aopguard/snapshot"
	"github.com/aopguard/aopguard/tlsconfig"
)

// apply builds the complete state for cfg off to the side (every PEM file
// read and checked, every policy compiled) and only then swaps it in. On
// error nothing changes.
func (a *app) apply(cfg *config.Config) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	snap, err := snapshot.Build(cfg, snapshot.Env{
		GetCertificate: a.servers.getCertificate,
		SelfSigned:     a.servers.selfSigned,
		Tickets:        a.tickets,
		Upstreams:      a.ups,
		Counter: func(l tlsconfig.Labels) tlsconfig.Counter {
			return a.metrics.Verification(l.Host, l.Mode, l.Result, l.Reason, l.Action, l.Source)
		},
		Refreshed: a.refreshed,
		Log:       a.log,
	})
	if err != nil {
		return err
	}
	// Everything is valid: from here on nothing can fail.
	if err := a.servers.replace(snap.Pairs); err != nil {
		return err
	}
	a.resetChangedPolicies(snap.Set, cfg.ReadyMinRequests)
	a.tracker.SetMinRequests(uint64(cfg.ReadyMinRequests))
	a.ips.Store(snap.IPs)
	a.cfg.Store(cfg)
	a.routes.Store(snap.Routes)
	a.ups.Prune(snap.Routes)
	a.metrics.SetExpiries(snap.Expiries)
	a.metrics.SetCRLNextUpdates(snap.CRLNextUpdates)
	a.loaded.Store(&snap.Expiries)
	a.metrics.Reloaded(true, float64(time.Now().Unix()))
	a.warnSetup(cfg, snap.Set, snap.Pairs)
	a.checkExpiries()
	return nil
}

// resetChangedPolicies forgets the rollout evidence of every policy whose
// mode, accepted signatures or CAs changed: it was gathered under another
// configuration. The exported evidence follows: its series carry a digest
// of mode, accepted signatures and CAs (policy_id), so the fleet report
// counts only evidence gathered under a policy some replica runs; their
// counters are resolved here, once.
func (a *app) resetChangedPolicies(set *tlsconfig.Set, minRequests int) {
	ids := map[string]string{}
	var exported []metrics.RolloutPolicy
	counters := evidenceCounters{}
	var outcomes [][2]string // derived from tlsconfig's list: a new reason gets its counter
	for _, v := range tlsconfig.Outcomes() {
		outcomes = append(outcomes, [2]string{v.Result.String(), v.Reason})
	}
	sources := []string{cfips.Cloudflare, cfips.Other}
	for _, p := range set.Policies() {
		id := p.Mode().String() + " " + p.Signatures().String()
		for _, c := range p.CAs() {
			id += " " + certs.Fingerprint(c.Raw)
		}
		ids[p.Name()] = id
		if old, ok := a.policyIDs[p.Name()]; ok && old != id {
			a.tracker.Reset(p.Name())
			a.log.Info().Str("policy", p.Name()).Msg("policy changed: rollout report restarts its counts")
		}
		sum := sha256.Sum256([]byte(id))
		digest := hex.EncodeToString(sum[:6])
		exported = append(exported, metrics.RolloutPolicy{Host: p.Name(), Mode: p.Mode().String(), ID: digest, Outcomes: outcomes, Sources: sources})
		for _, o := range outcomes {
			for _, src := range sources {
				counters[evidenceKey{p.Name(), o[0], o[1], src}] = a.metrics.RolloutEvidence(p.Name(), digest, o[0], o[1], src)
			}
		}
	}
	a.policyIDs = ids
	a.metrics.SetRolloutPolicies(exported, minRequests)
	a.evidence.Store(&counters)
}

// refreshRanges re-downloads Cloudflare's ranges on the configured
// schedule. A failed or suspicious download keeps the current list.
func (a *app) refreshRanges(ctx context.Context) {
	client := &http.Client{Timeout: 30 * time.Second}
	for {
		cfg := a.config()
		r := cfg.CloudflareIPsRefresh
		wait := r.Interval
		if len(r.URLs) == 0 {
			wait = time.Minute // not configured: look again after a reload
		} else {
			a.refreshOnce(ctx, client, r.URLs)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (a *app) refreshOnce(ctx context.Context, client *http.Client, urls []string) {
	next, err := cfips.Fetch(ctx, client, urls)
	if err == nil {
		err = cfips.CheckShrink(a.ips.Load(), next)
	}
	if err != nil {
		a.log.Error().Err(err).Str("current", a.ips.Load().Origin()).Msg("refreshing Cloudflare's address ranges failed; keeping the current list")
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.config().CloudflareIPsRefresh.URLs) == 0 {
		return // a reload turned refreshing off meanwhile
	}
	a.refreshed = next
	a.ips.Store(next)
	a.log.Info().Int("prefixes", next.Len()).Str("origin", next.Origin()).Msg("Cloudflare's address ranges refreshed")
}

// checkCRLs logs and counts every policy working from a CRL past its
// NextUpdate: at each load and daily.
func (a *app) checkCRLs(now time.Time) {
	for _, p := range a.set().Policies() {
		next := p.CRLNextUpdate()
		if next.IsZero() || now.Before(next) {
			continue
		}
		level, action := zerolog.WarnLevel, config.CRLStaleWarn
		effect := "still used: load a fresh CRL"
		if p.RefusesStaleCRL() {
			level, action = zerolog.ErrorLevel, config.CRLStaleRefuse
			effect = "every client certificate of this policy is refused until a fresh CRL is loaded"
		}
		a.metrics.CRLStale(p.Name(), action)
		a.log.WithLevel(level).Str("policy", p.Name()).Time("next_update", next).Str("crl_stale", action).
			Str("effect", effect).Msg("CRL is past its NextUpdate")
	}
}

// warnSetup logs configurations that work but are probably not what the
// operator wants.
func (a *app) warnSetup(cfg *config.Config, set *tlsconfig.Set, pairs []tls.Certificate) {
	if len(cfg.Certificates) == 0 && cfg.ACME == nil {
		a.log.Warn().Strs("names", selfSignedNames).
			Msg("no server certificate configured: serving a self-signed one generated at start; configure certificates (or --cert/--key) for production")
	}
	cf := certs.CloudflareOriginPullCA()
	for _, p := range set.Policies() {
		if p.Mode() == tlsconfig.Off {
			a.log.Warn().Str("policy", p.Name()).Msg("client certificates are not checked for this policy (mode off)")
			continue
		}
		onlyShared := len(p.CAs()) > 0
		for _, c := range p.CAs() {
			onlyShared = onlyShared && c.Equal(cf)
		}
		switch {
		case !onlyShared:
		case p.Name() == tlsconfig.ZoneName && !cfg.StrictHosts:
			a.log.Warn().Str("policy", p.Name()).
				Msg("the zone trusts Cloudflare's shared origin-pull CA and strict_hosts is off: any Cloudflare account can reach this origin; list your hostnames under hosts: and set strict_hosts: true")
		case p.Name() != tlsconfig.ZoneName:
			a.log.Warn().Str("policy", p.Name()).
				Msg("this host relies only on Cloudflare's shared origin-pull CA, which every Cloudflare account presents: use per-hostname AOP with your own CA (ca:) to shut out other accounts")
		}
	}
}

var selfSignedNames = []string{"localhost", "127.0.0.1", "::1"}

// serverCerts serves the origin's certificates from a certmagic cache, so
// ACME-managed certificates can join the unmanaged ones later.
type serverCerts struct {
	log    zerolog.Logger
	cache  *certmagic.Cache
	magic  *certmagic.Config
	hashes []string
	issuer *certmagic.ACMEIssuer // nil without acme:
	names  []string
	// fallback answers handshakes certmagic has no certificate for (no SNI
	// on a listener whose address no certificate names, or an unknown
	// name): the first configured certificate, like nginx's default server.
	fallback atomic.Pointer[tls.Certificate]
	self     *tls.Certificate
}

func newServerCerts(logger zerolog.Logger, acme *config.ACME, listen string) (*serverCerts, error) {
	s := &serverCerts{log: logger}
	zl := newZapLogger(logger, "certmagic", zapcore.WarnLevel)
	opts := certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return s.magic, nil },
		Logger:           zl,
	}
	cfg := certmagic.Config{Logger: zl}
	if acme != nil {
		opts.RenewCheckInterval = acme.CheckInterval
		cfg.Storage = &certmagic.FileStorage{Path: acme.Storage}
	}
	s.cache = certmagic.NewCache(opts)
	s.magic = certmagic.New(s.cache, cfg)
	if acme == nil {
		return s, nil
	}
	iss := certmagic.ACMEIssuer{
		CA:     acme.CA,
		Email:  acme.Email,
		Agreed: true,
		// Only the configured challenge; the solvers' own listeners
		// collide with ours and fall back to the handlers aopguard wires
		// in (the http_listen server and the acme-tls/1 hook).
		DisableHTTPChallenge:    acme.Challenge != "http-01",
		DisableTLSALPNChallenge: acme.Challenge != "tls-alpn-01",
		Logger:                  zl,
	}
	if host, port, err := net.SplitHostPort(listen); err == nil {
		iss.ListenHost = host
		iss.AltTLSALPNPort, _ = strconv.Atoi(port)
	}
	if acme.HTTPListen != "" {
		_, port, _ := net.SplitHostPort(acme.HTTPListen)
		iss.AltHTTPPort, _ = strconv.Atoi(port)
	}
	if acme.CARoot != "" {
		roots, err := certs.LoadBundle(acme.CARoot)
		if err != nil {
			s.cache.Stop()
			return nil, &config.Error{Key: "acme.ca_root", Err: err}
		}
		iss.TrustedRoots = x509.NewCertPool()
		for _, c := range roots {
			iss.TrustedRoots.AddCert(c)
		}
	}
	s.issuer = certmagic.NewACMEIssuer(s.magic, iss)
	s.magic.Issuers = []certmagic.Issuer{s.issuer}
	s.names = acme.Names
	return s, nil
}

// acmeTLS answers tls-alpn-01 validations (see tlsconfig.ServerOptions).
func (s *serverCerts) acmeTLS() *tls.Config {
	if s.issuer == nil {
		return nil
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"acme-tls/1"}, GetCertificate: s.magic.GetCertificate}
}

// manage starts obtaining and renewing the ACME names in the background;
// until a certificate arrives, handshakes for a name get the fallback.
func (s *serverCerts) manage(ctx context.Context) error {
	if s.issuer == nil {
		return nil
	}
	return s.magic.ManageAsync(ctx, s.names)
}

// httpHandler serves ACME http-01 challenges and redirects every other
// request to https on the TLS listener's port.
func (s *serverCerts) httpHandler(listen string) http.Handler {
	_, port, _ := net.SplitHostPort(listen)
	return s.issuer.HTTPChallengeHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if port != "443" {
			host = net.JoinHostPort(host, port)
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusMovedPermanently)
	}))
}

// missing lists the ACME-managed names that have no certificate yet.
func (s *serverCerts) missing() []string {
	if s.issuer == nil {
		return nil
	}
	var out []string
	for _, n := range s.names {
		if len(s.cache.AllMatchingCertificates(n)) == 0 {
			out = append(out, n)
		}
	}
	return out
}

func (s *serverCerts) close() { s.cache.Stop() }

// selfSigned returns the process's self-signed certificate, made once so
// that reloads do not change it under clients that pinned it.
func (s *serverCerts) selfSigned() (tls.Certificate, error) {
	if s.self == nil {
		c, err := certs.SelfSigned(selfSignedNames...)
		if err != nil {
			return tls.Certificate{}, err
		}
		s.self = &c
	}
	return *s.self, nil
}

// replace caches the new certificates before removing the old ones, so
// there is never a moment without one. When one cannot be cached, only
// what this call added is removed again: caching a certificate that is
// already served returns the live entry's hash, and removing that would
// stop serving it.
func (s *serverCerts) replace(pairs []tls.Certificate) error {
	var hashes []string
	keep := map[string]bool{}
	for _, p := range pairs {
		h, err := s.magic.CacheUnmanagedTLSCertificate(context.Background(), p, nil)
		if err != nil {
			var added []string
			for _, h := range hashes {
				if !slices.Contains(s.hashes, h) {
					added = append(added, h)
				}
			}
			s.cache.Remove(added)
			return fmt.Errorf("caching server certificate %s: %w", certs.Describe(p.Leaf), err)
		}
		hashes = append(hashes, h)
		keep[h] = true
	}
	first := pairs[0]
	s.fallback.Store(&first)
	var drop []string
	for _, h := range s.hashes {
		if !keep[h] {
			drop = append(drop, h)
		}
	}
	s.cache.Remove(drop)
	s.hashes = hashes
	return nil
}

func (s *serverCerts) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	c, err := s.magic.GetCertificate(hello)
	if err == nil && c != nil && len(c.Certificate) > 0 {
		return c, nil
	}
	return s.fallback.Load(), nil
}
