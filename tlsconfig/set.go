package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"

	"github.com/aopguard/aopguard/cfips"
)

// ZoneName is the Policy name of the zone-wide policy.
const ZoneName = "_zone"

// Options are shared by every Policy of a Set.
type Options struct {
	// GetCertificate serves the origin's own certificate (from certmagic).
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// Tickets supplies session ticket keys (the process's own, or
	// SharedTicketKeys from a file); each Policy gets keys derived for it
	// alone, so that a ticket never resumes a session under another Policy.
	Tickets *TicketKeys
	// Counter returns the verification counter for one label set; nil
	// disables counting.
	Counter func(Labels) Counter
	// NextProtos are the ALPN protocols offered; default h2, http/1.1,
	// http/1.0 (crypto/tls refuses a client whose offer matches none, and
	// curl --http1.0 offers only http/1.0).
	NextProtos []string
	// StrictHosts refuses server names (and Host headers) that match no
	// configured host, instead of giving them the zone policy.
	StrictHosts bool
	// RefuseNoSNI refuses connections without a server name (direct to
	// IP) instead of giving them the zone policy.
	RefuseNoSNI bool
}

// tls12Suites are the TLS 1.2 cipher suites offered: forward-secret AEAD
// only. TLS 1.3 suites are not configurable and all strong.
var tls12Suites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// Set is an immutable snapshot of every Policy, built once per (re)load.
type Set struct {
	zone        *Policy
	exact       map[string]*Policy
	wild        map[string]*Policy // keyed by the parent domain of "*.parent"
	list        []*Policy
	strict      bool
	refuseNoSNI bool
	tickets     *TicketKeys
	// refuse answers a ClientHello for a name no policy accepts: with no
	// certificate to offer, crypto/tls sends unrecognized_name.
	refuse *tls.Config
}

// NewSet compiles the zone policy and the host policies. Host names must be
// unique (case-insensitively); a wildcard is "*." followed by a domain.
func NewSet(zone PolicySpec, hosts []PolicySpec, opts Options) (*Set, error) {
	if opts.Tickets == nil {
		return nil, fmt.Errorf("tlsconfig: Options.Tickets is required")
	}
	if len(opts.NextProtos) == 0 {
		opts.NextProtos = []string{"h2", "http/1.1", "http/1.0"}
	}
	zone.Name = ZoneName
	s := &Set{exact: map[string]*Policy{}, wild: map[string]*Policy{}, strict: opts.StrictHosts, refuseNoSNI: opts.RefuseNoSNI, tickets: opts.Tickets}
	s.refuse = &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, nil },
	}
	for i, spec := range append([]PolicySpec{zone}, hosts...) {
		p, err := compile(spec, i, opts)
		if err != nil {
			return nil, err
		}
		if i > 0 && s.zone.mode != Off && !sameCerts(spec.CAs, zone.CAs) {
			p.zoneRoots = s.zone.roots
		}
		s.list = append(s.list, p)
		if i == 0 {
			s.zone = p
			continue
		}
		name := normalize(spec.Name)
		table, key := s.exact, name
		if parent, ok := strings.CutPrefix(name, "*."); ok {
			table, key = s.wild, parent
		}
		if key == "" || strings.Contains(key, "*") {
			return nil, fmt.Errorf("tlsconfig: host %q: a wildcard is \"*.\" followed by a domain", spec.Name)
		}
		if _, dup := table[key]; dup {
			return nil, fmt.Errorf("tlsconfig: host %q is configured twice", spec.Name)
		}
		table[key] = p
	}
	return s, nil
}

func compile(spec PolicySpec, index int, opts Options) (*Policy, error) {
	p := &Policy{name: spec.Name, mode: spec.Mode, sigs: spec.Signatures, cas: spec.CAs, upstream: spec.Upstream, index: index}
	if spec.Mode != Off && len(spec.CAs) == 0 {
		return nil, fmt.Errorf("tlsconfig: policy %s: mode %s needs at least one CA", spec.Name, spec.Mode)
	}
	p.roots = x509.NewCertPool()
	for _, c := range spec.CAs {
		p.roots.AddCert(c)
	}
	if spec.Signatures != AnySignatures && spec.Signatures != PostQuantum {
		return nil, fmt.Errorf("tlsconfig: policy %s: unknown client certificate signatures %d", spec.Name, spec.Signatures)
	}
	revoked, err := newRevocations(spec.CRLs, spec.CAs)
	if err != nil {
		return nil, fmt.Errorf("tlsconfig: policy %s: %w", spec.Name, err)
	}
	p.allow, p.revoked, p.refuseStale = spec.Allow, revoked, spec.RefuseStaleCRL
	for _, crl := range spec.CRLs {
		if !crl.NextUpdate.IsZero() && (p.crlNextUpdate.IsZero() || crl.NextUpdate.Before(p.crlNextUpdate)) {
			p.crlNextUpdate = crl.NextUpdate
		}
	}
	p.tls = &tls.Config{
		MinVersion:     tls.VersionTLS12,
		CipherSuites:   tls12Suites,
		GetCertificate: opts.GetCertificate,
		NextProtos:     opts.NextProtos,
		// Full-size records from the first byte, as nginx sends them:
		// crypto/tls otherwise starts each connection with ~1.2 KiB
		// records (for browsers on lossy links, not Cloudflare's), which
		// splits even a small first response into two writes.
		DynamicRecordSizingDisabled: true,
	}
	switch spec.Mode {
	case Off:
		p.tls.ClientAuth = tls.NoClientCert
	case LogOnly:
		p.tls.ClientAuth = tls.RequestClientCert
		p.tls.ClientCAs = p.roots // advertised in CertificateRequest, not enforced by crypto/tls
	case Require:
		p.tls.ClientAuth = tls.RequireAnyClientCert
		p.tls.ClientCAs = p.roots
		p.tls.VerifyConnection = p.verifyConnection
	default:
		return nil, fmt.Errorf("tlsconfig: policy %s: unknown mode %d", spec.Name, spec.Mode)
	}
	p.tls.SetSessionTicketKeys(opts.Tickets.forPolicy(spec.Name))
	if opts.Counter != nil {
		// Resolve only the label sets this mode can produce, so /metrics
		// shows no impossible series (a "reject" under log-only).
		for o := range numOutcomes {
			v := outcomeVerdict(o)
			if (spec.Mode == Off) != (o == 1) {
				continue // Off only ever yields a plain None; the others never do
			}
			if spec.Signatures != PostQuantum && postQuantumOnly(v.Reason) {
				continue
			}
			for src, name := range [2]string{cfips.Cloudflare, cfips.Other} {
				p.counters[o][src] = opts.Counter(Labels{
					Host: spec.Name, Mode: spec.Mode.String(), Result: v.Result.String(),
					Reason: v.Reason, Action: p.ActionFor(v).String(), Source: name,
				})
			}
		}
	}
	return p, nil
}

func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

// Zone returns the zone policy.
func (s *Set) Zone() *Policy { return s.zone }

// Policies returns every Policy, the zone first, in configuration order.
func (s *Set) Policies() []*Policy { return s.list }

// Match returns the Policy for a TLS server name or HTTP host (without
// port): the exact host, else the wildcard for its parent domain ("*.a.b"
// matches "x.a.b", one label, never "a.b"), else the zone policy, which is
// also what an empty name (a direct-to-IP request) gets. Case and a
// trailing dot are ignored.
func (s *Set) Match(name string) *Policy {
	if name == "" {
		return s.zone
	}
	name = normalize(name)
	if p, ok := s.exact[name]; ok {
		return p
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if p, ok := s.wild[name[i+1:]]; ok {
			return p
		}
	}
	return s.zone
}

// Lookup is Match for admission: it also reports whether the name is
// accepted at all. Under StrictHosts a name that matches no configured
// host is not; with RefuseNoSNI neither is an empty name.
func (s *Set) Lookup(name string) (*Policy, bool) {
	p := s.Match(name)
	switch {
	case name == "":
		return p, !s.refuseNoSNI
	case p == s.zone:
		return p, !s.strict
	}
	return p, true
}

// Strict reports whether unknown names are refused.
func (s *Set) Strict() bool { return s.strict }

// RefreshTicketKeys installs k's current keys into every Policy; call it
// after TicketKeys.Rotate. A Set built on other keys (a shared key file)
// is left alone.
func (s *Set) RefreshTicketKeys(k *TicketKeys) {
	if k != s.tickets {
		return
	}
	for _, p := range s.list {
		p.tls.SetSessionTicketKeys(k.forPolicy(p.name))
	}
}
