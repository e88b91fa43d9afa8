package cloudflare

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/cloudflare/cloudflare-go/v7/dns"
	aop "github.com/cloudflare/cloudflare-go/v7/origin_tls_client_auth"
	"github.com/cloudflare/cloudflare-go/v7/zones"

	"github.com/aopguard/aopguard/certs"
)

// Level is where the certificate Cloudflare presents for a hostname comes
// from. Per-hostname beats zone-level beats global.
type Level string

// The AOP levels, and none.
const (
	LevelNone     Level = "none"
	LevelGlobal   Level = "global"
	LevelZone     Level = "zone"
	LevelHostname Level = "hostname"
)

// Cert is a certificate uploaded to Cloudflare.
type Cert struct {
	ID     string
	Status string
	// Chain is the parsed PEM Cloudflare returned (leaf first); empty if
	// it did not parse.
	Chain       []*x509.Certificate
	Fingerprint string // of the leaf; "" without a chain
	ExpiresOn   time.Time
	UploadedOn  time.Time
}

func newCert(id, status, pemText string, expires, uploaded time.Time) Cert {
	c := Cert{ID: id, Status: status, ExpiresOn: expires, UploadedOn: uploaded}
	if chain, err := certs.ParseBundle([]byte(pemText)); err == nil {
		c.Chain, c.Fingerprint = chain, certs.Fingerprint(chain[0].Raw)
		if c.ExpiresOn.IsZero() {
			c.ExpiresOn = chain[0].NotAfter
		}
	}
	return c
}

// Hostname is one hostname's per-hostname AOP association. Enabled
// false is an explicit disable: Cloudflare then sends no certificate to
// the hostname, even with zone-level (or global) AOP on. An association
// voided with enabled null is no association.
type Hostname struct {
	Name    string
	CertID  string
	Enabled bool
	// Status is the association's status (active, pending_deployment...).
	Status string
	Cert   Cert
}

// State is a zone's AOP configuration at Cloudflare.
type State struct {
	ZoneID string
	// Global is the zone setting tls_client_auth ("on": Cloudflare's
	// shared certificate for every proxied hostname).
	Global bool
	// ZoneLevel is origin_tls_client_auth/settings' enabled, and ZoneCerts
	// the certificates uploaded for it.
	ZoneLevel bool
	ZoneCerts []Cert
	// Hostnames are the per-hostname associations of the names looked up
	// that have one.
	Hostnames map[string]Hostname
	// Proxied lists the zone's proxied DNS names, nil if they could not be
	// read (Notes says why).
	Proxied []string
	// Notes say what could not be read and what the audit therefore
	// cannot see.
	Notes []string
}

// ZoneCert returns the zone-level certificate Cloudflare presents: the
// most recently uploaded active one, else the most recent one still
// deploying; nil when there is none or zone-level AOP is off.
func (s *State) ZoneCert() *Cert {
	if !s.ZoneLevel {
		return nil
	}
	var best *Cert
	for i := range s.ZoneCerts {
		c := &s.ZoneCerts[i]
		if c.Status == "deleted" || c.Status == "pending_deletion" || c.Status == "deletion_timed_out" {
			continue
		}
		if best == nil || better(c, best) {
			best = c
		}
	}
	return best
}

// better prefers an active certificate, then the most recently uploaded.
func better(c, than *Cert) bool {
	if a, b := c.Status == "active", than.Status == "active"; a != b {
		return a
	}
	return c.UploadedOn.After(than.UploadedOn)
}

// maxLookups bounds the per-hostname status requests of one audit.
const maxLookups = 500

// ReadState reads the zone's three AOP levels and the per-hostname
// association of every name given plus every proxied DNS name.
func (c *Client) ReadState(ctx context.Context, zoneID string, names []string) (*State, error) {
	s := &State{ZoneID: zoneID, Hostnames: map[string]Hostname{}}
	var err error
	if s.Global, err = c.globalSetting(ctx, zoneID); err != nil {
		return nil, err
	}
	var sp aop.SettingGetParams
	sp.ZoneID.Value, sp.ZoneID.Present = zoneID, true
	set, err := c.aop.Settings.Get(ctx, sp)
	if err != nil {
		return nil, apiError("reading zone-level AOP setting", err)
	}
	s.ZoneLevel = set.Enabled
	var zp aop.ZoneCertificateListParams
	zp.ZoneID.Value, zp.ZoneID.Present = zoneID, true
	zl, err := c.aop.ZoneCertificates.List(ctx, zp)
	if err != nil {
		return nil, apiError("listing zone-level AOP certificates", err)
	}
	for _, z := range zl.Result {
		s.ZoneCerts = append(s.ZoneCerts, newCert(z.ID, string(z.Status), z.Certificate, z.ExpiresOn, z.UploadedOn))
	}
	if s.Proxied, err = c.proxiedNames(ctx, zoneID); err != nil {
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
			return nil, err
		}
		s.Proxied = nil
		s.Notes = append(s.Notes, "the token cannot read DNS records (Zone DNS Read): hostnames with per-hostname AOP that the config does not name are not found")
	}
	seen := map[string]bool{}
	var lookups []string
	for _, n := range append(append([]string{}, names...), s.Proxied...) {
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		if n != "" && !seen[n] {
			seen[n] = true
			lookups = append(lookups, n)
		}
	}
	if len(lookups) > maxLookups {
		s.Notes = append(s.Notes, fmt.Sprintf("only the first %d of %d hostnames were looked up", maxLookups, len(lookups)))
		lookups = lookups[:maxLookups]
	}
	for _, n := range lookups {
		h, ok, err := c.Hostname(ctx, zoneID, n)
		if err != nil {
			return nil, err
		}
		if ok {
			s.Hostnames[n] = h
		}
	}
	return s, nil
}

// globalSetting reads the zone setting tls_client_auth.
func (c *Client) globalSetting(ctx context.Context, zoneID string) (bool, error) {
	var p zones.SettingGetParams
	p.ZoneID.Value, p.ZoneID.Present = zoneID, true
	res, err := c.settings.Get(ctx, "tls_client_auth", p)
	if err != nil {
		return false, apiError("reading zone setting tls_client_auth", err)
	}
	var v struct {
		Value string `json:"value"`
	}
	if err := json.Unmarshal([]byte(res.JSON.RawJSON()), &v); err != nil {
		return false, fmt.Errorf("cloudflare: zone setting tls_client_auth: %w", err)
	}
	return v.Value == "on", nil
}

// proxiedNames lists the zone's proxied DNS names, every page.
func (c *Client) proxiedNames(ctx context.Context, zoneID string) ([]string, error) {
	var p dns.RecordListParams
	p.ZoneID.Value, p.ZoneID.Present = zoneID, true
	p.Proxied.Value, p.Proxied.Present = true, true
	pager := c.dns.ListAutoPaging(ctx, p)
	seen := map[string]bool{}
	names := []string{}
	for pager.Next() {
		r := pager.Current()
		if r.Proxied && !seen[r.Name] {
			seen[r.Name] = true
			names = append(names, r.Name)
		}
	}
	if err := pager.Err(); err != nil {
		return nil, apiError("listing proxied DNS records", err)
	}
	sort.Strings(names)
	return names, nil
}

// Hostname reads one hostname's per-hostname association; ok is false
// when it has none (Cloudflare answers 404, or no certificate).
func (c *Client) Hostname(ctx context.Context, zoneID, name string) (Hostname, bool, error) {
	var p aop.HostnameGetParams
	p.ZoneID.Value, p.ZoneID.Present = zoneID, true
	r, err := c.aop.Hostnames.Get(ctx, name, p)
	if err != nil {
		var ae *aop.Error
		if errors.As(err, &ae) && ae.StatusCode == http.StatusNotFound {
			return Hostname{}, false, nil
		}
		return Hostname{}, false, apiError("reading per-hostname AOP of "+name, err)
	}
	if r.CERTID == "" || r.JSON.Enabled.IsNull() {
		return Hostname{}, false, nil
	}
	h := Hostname{Name: name, CertID: r.CERTID, Enabled: r.Enabled, Status: string(r.Status),
		Cert: newCert(r.CERTID, string(r.CERTStatus), r.Certificate, r.ExpiresOn, r.CERTUploadedOn)}
	return h, true, nil
}

// HostnameCerts lists the certificates uploaded for per-hostname AOP.
func (c *Client) HostnameCerts(ctx context.Context, zoneID string) ([]Cert, error) {
	var p aop.HostnameCertificateListParams
	p.ZoneID.Value, p.ZoneID.Present = zoneID, true
	l, err := c.aop.HostnameCertificates.List(ctx, p)
	if err != nil {
		return nil, apiError("listing per-hostname AOP certificates", err)
	}
	var out []Cert
	for _, h := range l.Result {
		out = append(out, newCert(h.ID, string(h.Status), h.Certificate, h.ExpiresOn, h.UploadedOn))
	}
	return out, nil
}
