// Package snapshot builds, from a config.Config, the immutable state
// aopguard serves with: the policies (a tlsconfig.Set), the routes to the
// upstreams, the server certificates, Cloudflare's address ranges and every
// certificate expiry to report. Every file the configuration names is read
// and checked here, and errors name the configuration file, the key and its
// line; nothing running changes until the caller swaps a Snapshot in.
package snapshot

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"

	"github.com/rs/zerolog"

	"github.com/aopguard/aopguard/certs"
	"github.com/aopguard/aopguard/cfips"
	"github.com/aopguard/aopguard/config"
	"github.com/aopguard/aopguard/metrics"
	"github.com/aopguard/aopguard/proxy"
	"github.com/aopguard/aopguard/tlsconfig"
)

// Snapshot is what a configuration compiles to. It is not modified after
// Build returns it.
type Snapshot struct {
	// Set holds the policies; Routes the upstream of each.
	Set    *tlsconfig.Set
	Routes *proxy.Routes
	// Pairs are the server certificates to serve (the self-signed one
	// when none is configured).
	Pairs []tls.Certificate
	// IPs are Cloudflare's address ranges in force.
	IPs *cfips.List
	// Expiries are the loaded certificates (CAs and server certificates)
	// for the expiry gauge and warnings.
	Expiries []metrics.Expiry
	// CRLNextUpdates is each CRL's NextUpdate as a Unix time, by policy.
	CRLNextUpdates map[string]float64
}

// Env is what a build takes from the running process rather than from the
// configuration.
type Env struct {
	// GetCertificate serves the server certificates to every policy.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// SelfSigned returns the certificate served when none is configured.
	SelfSigned func() (tls.Certificate, error)
	// Tickets are the process's own session ticket keys, used unless
	// session_ticket_keys names a shared file.
	Tickets *tlsconfig.TicketKeys
	// Upstreams builds the routes (and keeps their connection pools).
	Upstreams *proxy.Upstreams
	// Counter resolves each policy's verification counters.
	Counter func(tlsconfig.Labels) tlsconfig.Counter
	// Refreshed is the last good download of Cloudflare's ranges (nil:
	// none); a configured cloudflare_ips file wins over it.
	Refreshed *cfips.List
	// Log receives warnings about files that load but deserve attention.
	Log zerolog.Logger
}

// Build reads every file cfg names and compiles the Snapshot. On error
// nothing is returned, and the error names the file, key and line.
func Build(cfg *config.Config, env Env) (*Snapshot, error) {
	bad := cfg.KeyError
	zone, hosts, expiries, err := Policies(cfg)
	if err != nil {
		return nil, err
	}

	// Cloudflare's ranges: a configured file, else the last good refresh,
	// else the embedded snapshot.
	ips := cfips.Default()
	switch {
	case cfg.CloudflareIPs != "":
		l, err := cfips.Load(cfg.CloudflareIPs)
		if err != nil {
			return nil, bad("cloudflare_ips", err)
		}
		ips = l
	case len(cfg.CloudflareIPsRefresh.URLs) > 0 && env.Refreshed != nil:
		ips = env.Refreshed
	}

	var pairs []tls.Certificate
	for i, kp := range cfg.Certificates {
		pair, err := certs.LoadKeyPair(kp.Cert, kp.Key)
		if err != nil {
			return nil, bad(fmt.Sprintf("certificates[%d]", i), err)
		}
		pairs = append(pairs, pair)
	}
	if len(pairs) == 0 {
		self, err := env.SelfSigned()
		if err != nil {
			return nil, err
		}
		pairs = []tls.Certificate{self}
	}
	for _, p := range pairs {
		expiries = append(expiries, metrics.Expiry{Role: "server", Cert: p.Leaf})
	}

	tickets := env.Tickets
	if cfg.SessionTicketKeys != "" {
		warn, err := tlsconfig.CheckTicketKeysMode(cfg.SessionTicketKeys)
		var keys [][tlsconfig.TicketKeyBytes]byte
		if err == nil {
			keys, err = tlsconfig.LoadTicketKeys(cfg.SessionTicketKeys)
		}
		if err == nil {
			tickets, err = tlsconfig.SharedTicketKeys(keys)
		}
		if err != nil {
			return nil, bad("session_ticket_keys", err)
		}
		if warn != nil {
			env.Log.Warn().Str("key", "session_ticket_keys").Err(warn).Msg("session ticket key file is readable by its group")
		}
	}
	set, err := tlsconfig.NewSet(zone, hosts, tlsconfig.Options{
		GetCertificate: env.GetCertificate,
		Tickets:        tickets,
		StrictHosts:    cfg.StrictHosts,
		RefuseNoSNI:    !cfg.AllowNoSNI,
		Counter:        env.Counter,
	})
	if err != nil {
		return nil, &config.Error{File: cfg.File, Err: err}
	}
	routes, err := env.Upstreams.Routes(set, cfg.UpstreamTimeout)
	if err != nil {
		return nil, &config.Error{File: cfg.File, Err: err}
	}
	routes.TrustCloudflareHeaders = cfg.TrustCloudflareHeaders
	routes.RequireCloudflareSource = cfg.RequireCloudflareSource
	crlNext := map[string]float64{}
	for _, p := range set.Policies() {
		if t := p.CRLNextUpdate(); !t.IsZero() {
			crlNext[p.Name()] = float64(t.Unix())
		}
	}
	return &Snapshot{Set: set, Routes: routes, Pairs: pairs, IPs: ips, Expiries: expiries, CRLNextUpdates: crlNext}, nil
}

// Policies reads the CA bundles and CRLs cfg names and returns the zone
// and host policy specifications, plus the CAs for the expiry gauge.
// Errors name the config file, the key and its line.
func Policies(cfg *config.Config) (zone tlsconfig.PolicySpec, hosts []tlsconfig.PolicySpec, expiries []metrics.Expiry, err error) {
	// Modes were checked by config.Validate (with tlsconfig.ParseMode).
	zoneMode, err := tlsconfig.ParseMode(cfg.Mode)
	if err != nil {
		return zone, nil, nil, cfg.KeyError("mode", err)
	}
	zoneSigs, err := tlsconfig.ParseSignatures(cfg.ClientCertSignatures)
	if err != nil {
		return zone, nil, nil, cfg.KeyError("client_cert_signatures", err)
	}
	zone = tlsconfig.PolicySpec{Name: tlsconfig.ZoneName, Mode: zoneMode, Signatures: zoneSigs, Upstream: cfg.Upstream,
		RefuseStaleCRL: cfg.CRLStale == config.CRLStaleRefuse}
	if zone.Allow, err = allowRules(cfg, "allow", cfg.Allow); err != nil {
		return zone, nil, nil, err
	}
	zone.CAs = []*x509.Certificate{certs.CloudflareOriginPullCA()}
	if cfg.ZoneCA != config.CloudflareCA {
		if zone.CAs, err = loadTrustBundle(cfg, "zone_ca", cfg.ZoneCA, zone.Allow, "allow"); err != nil {
			return zone, nil, nil, err
		}
	}
	for _, c := range zone.CAs {
		expiries = append(expiries, metrics.Expiry{Role: "zone_ca", Host: tlsconfig.ZoneName, Cert: c})
	}
	if zone.CRLs, err = loadCRL(cfg, "crl", cfg.CRL, zone.CAs); err != nil {
		return zone, nil, nil, err
	}
	for i, h := range cfg.Hosts {
		key := fmt.Sprintf("hosts[%d]", i)
		spec := tlsconfig.PolicySpec{Name: h.Name, Mode: zoneMode, Signatures: zoneSigs, CAs: zone.CAs, Upstream: cfg.Upstream,
			RefuseStaleCRL: zone.RefuseStaleCRL}
		if h.CRLStale != "" {
			spec.RefuseStaleCRL = h.CRLStale == config.CRLStaleRefuse
		}
		if spec.Allow, err = allowRules(cfg, key+".allow", h.Allow); err != nil {
			return zone, nil, nil, err
		}
		if h.Mode != "" {
			if spec.Mode, err = tlsconfig.ParseMode(h.Mode); err != nil {
				return zone, nil, nil, cfg.KeyError(key+".mode", err)
			}
		}
		if h.ClientCertSignatures != "" {
			if spec.Signatures, err = tlsconfig.ParseSignatures(h.ClientCertSignatures); err != nil {
				return zone, nil, nil, cfg.KeyError(key+".client_cert_signatures", err)
			}
		}
		if h.Upstream != "" {
			spec.Upstream = h.Upstream
		}
		if h.CA != "" {
			if spec.CAs, err = loadTrustBundle(cfg, key+".ca", h.CA, spec.Allow, key+".allow"); err != nil {
				return zone, nil, nil, err
			}
			for _, c := range spec.CAs {
				expiries = append(expiries, metrics.Expiry{Role: "host_ca", Host: h.Name, Cert: c})
			}
		}
		if spec.CRLs, err = loadCRL(cfg, key+".crl", h.CRL, spec.CAs); err != nil {
			return zone, nil, nil, err
		}
		hosts = append(hosts, spec)
	}
	return zone, hosts, expiries, nil
}

// loadTrustBundle reads the CA bundle at key. A leaf certificate in it
// (CA:FALSE) is refused: trusted as a root it acts as a pin of that one
// certificate, and the next renewal breaks. It is accepted only when the
// same policy's allow.sha256 (allowKey) lists it too, which says in the
// configuration that the pin is meant.
func loadTrustBundle(cfg *config.Config, key, path string, allow tlsconfig.AllowRules, allowKey string) ([]*x509.Certificate, error) {
	cs, err := certs.LoadBundle(path)
	if err != nil {
		return nil, cfg.KeyError(key, err)
	}
	for i, c := range cs {
		if c.IsCA || slices.Contains(allow.SHA256, sha256.Sum256(c.Raw)) {
			continue
		}
		return nil, cfg.KeyError(key, fmt.Errorf("%s: certificate %d of %d (%s, sha256 %s) is a leaf, not a CA: trusted as a CA it would "+
			"accept only itself, and stop working when it is renewed. Trust the CA that issued it; to pin this certificate on purpose, "+
			"also list its sha256 under %s.sha256", path, i+1, len(cs), certs.Describe(c), certs.Fingerprint(c.Raw), allowKey))
	}
	return cs, nil
}

// allowRules parses the allow rules at key.
func allowRules(cfg *config.Config, key string, a config.Allow) (tlsconfig.AllowRules, error) {
	var r tlsconfig.AllowRules
	for _, list := range []struct {
		name string
		in   []string
		out  *[][32]byte
	}{{"sha256", a.SHA256, &r.SHA256}, {"spki_sha256", a.SPKISHA256, &r.SPKISHA256}} {
		for j, s := range list.in {
			h, err := tlsconfig.ParseHash(s)
			if err != nil {
				return r, cfg.KeyError(fmt.Sprintf("%s.%s[%d]", key, list.name, j), err)
			}
			*list.out = append(*list.out, h)
		}
	}
	r.DNS, r.CN = a.DNS, a.CN
	return r, nil
}

// loadCRL reads the CRL at key, if one is configured, and checks that one
// of the policy's CAs signed it.
func loadCRL(cfg *config.Config, key, path string, cas []*x509.Certificate) ([]*x509.RevocationList, error) {
	if path == "" {
		return nil, nil
	}
	crl, err := certs.LoadCRL(path)
	if err != nil {
		return nil, cfg.KeyError(key, err)
	}
	if err := tlsconfig.CheckCRLSigner(crl, cas); err != nil {
		return nil, cfg.KeyError(key, fmt.Errorf("%s: %w", path, err))
	}
	return []*x509.RevocationList{crl}, nil
}
