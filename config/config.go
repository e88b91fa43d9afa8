// Package config reads aopguard's YAML configuration. Decoding is strict:
// an unknown key, a wrong type or a bad value is an *Error naming the file,
// the key path (e.g. hosts[1].mode) and the line, so that an operator can
// fix it without guessing.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/aopguard/aopguard/tlsconfig"
)

// Defaults for settings the configuration leaves out.
const (
	DefaultListen           = ":8443"
	DefaultAdmin            = "127.0.0.1:9090"
	DefaultMode             = "require"
	DefaultSignatures       = "any"
	DefaultZoneCA           = "cloudflare"
	DefaultMaxHeaderBytes   = 64 << 10
	DefaultUpstreamTimeout  = 60 * time.Second
	DefaultShutdownTimeout  = 30 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
)

// CloudflareCA is the zone_ca value that selects the embedded
// origin-pull CA.
const CloudflareCA = "cloudflare"

// Config is a validated configuration. Paths are absolute (resolved against
// the config file's folder when read from a file).
type Config struct {
	// File is the file it was read from ("" when built from flags only).
	File     string
	Listen   string
	Admin    string
	Upstream string
	Mode     string
	// ClientCertSignatures is "any" (default) or "post-quantum": the zone
	// default of which client certificate signatures are accepted.
	ClientCertSignatures string
	// ZoneCA is CloudflareCA or a PEM bundle path.
	ZoneCA       string
	Certificates []KeyPair
	Hosts        []Host

	MaxHeaderBytes   int
	UpstreamTimeout  time.Duration
	ShutdownTimeout  time.Duration
	HandshakeTimeout time.Duration

	// CloudflareIPs is a file of address prefixes that replaces the
	// embedded snapshot of Cloudflare's ranges ("" keeps the snapshot).
	CloudflareIPs string
	// CloudflareIPsRefresh, when URLs is not empty, re-downloads the ranges
	// every Interval (exclusive with CloudflareIPs).
	CloudflareIPsRefresh Refresh
	// ReadyMinRequests is how many Cloudflare requests a log-only policy
	// must see in the last hour before the report can call it ready.
	ReadyMinRequests int

	// StrictHosts refuses server names and Host headers that match no
	// configured host instead of giving them the zone policy.
	StrictHosts bool
	// AllowNoSNI lets connections without a server name (direct to IP)
	// use the zone policy.
	AllowNoSNI bool
	// Allow, CRL and CRLStale apply to the zone policy; hosts have their
	// own.
	Allow    Allow
	CRL      string
	CRLStale string
	// TrustCloudflareHeaders sets X-Forwarded-For and X-Real-IP from
	// CF-Connecting-IP for verified connections (and, with
	// RequireCloudflareSource, only those from Cloudflare's ranges);
	// other connections have CF-* headers removed.
	TrustCloudflareHeaders  bool
	RequireCloudflareSource bool

	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	MaxConnections    int
	MaxHandshakes     int

	// ReloadCheckInterval is how often the files the configuration reads
	// are compared with what was loaded, besides file notifications.
	ReloadCheckInterval time.Duration

	// ACME, when set, obtains and renews server certificates for Names.
	ACME *ACME

	// ProxyProtocol, when set, requires a PROXY protocol header from its
	// trusted peers (load balancers) and takes the client's address from it.
	ProxyProtocol *ProxyProtocol
	// SessionTicketKeys is a file of shared session ticket keys ("": keys
	// of the process's own, rotated daily).
	SessionTicketKeys string

	// lines maps key paths (hosts[1].ca) to their line in File, for
	// errors found later, when the files the configuration names are read.
	lines map[string]int
}

// KeyError returns err as an *Error at key, naming the file and the key's
// line: what the loader reports when a file the configuration names is
// unusable.
func (c *Config) KeyError(key string, err error) *Error {
	return &Error{File: c.File, Key: key, Line: c.lines[key], Err: err}
}

// ProxyProtocol configures PROXY protocol v1/v2 on the listener.
type ProxyProtocol struct {
	// Trusted are the peers that must send a header; a header from any
	// other peer is refused.
	Trusted []netip.Prefix
	// Timeout bounds the wait for the header.
	Timeout time.Duration
}

// DefaultProxyTimeout is proxy_protocol.timeout when not given.
const DefaultProxyTimeout = 5 * time.Second

// ACME configures certificates obtained from an ACME CA through certmagic.
type ACME struct {
	Email string
	// CA is the ACME directory URL.
	CA string
	// CARoot, if set, is a PEM bundle trusted for the ACME server's own
	// HTTPS (a private ACME CA such as step-ca or Pebble).
	CARoot    string
	Names     []string
	Challenge string // http-01 or tls-alpn-01
	// HTTPListen serves http-01 challenges and redirects everything else
	// to https (required for http-01).
	HTTPListen string
	// Storage is certmagic's folder for keys, certificates and locks;
	// replicas share it.
	Storage string
	// CheckInterval is how often certificates are checked for renewal.
	CheckInterval time.Duration
}

// ACME defaults.
const (
	DefaultACMECA            = "https://acme-v02.api.letsencrypt.org/directory"
	DefaultACMEStorage       = "/var/lib/aopguard"
	DefaultACMECheckInterval = 10 * time.Minute
)

// Allow narrows a policy to particular client certificates (see
// tlsconfig.AllowRules): a leaf passes when it matches any entry.
type Allow struct {
	SHA256     []string
	SPKISHA256 []string
	DNS        []string
	CN         []string
}

// Refresh configures periodic downloads of Cloudflare's ranges.
type Refresh struct {
	URLs     []string
	Interval time.Duration
}

// DefaultRefreshInterval is how often the ranges are re-downloaded when
// cloudflare_ips_refresh gives no interval.
const DefaultRefreshInterval = 24 * time.Hour

// Defaults of the limits.
const (
	DefaultReadyMinRequests  = 100
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxConnections    = 16384
	DefaultMaxHandshakes     = 1024
	DefaultReloadCheck       = time.Minute
)

// KeyPair is one server certificate chain and its key.
type KeyPair struct {
	Cert string
	Key  string
}

// Host is a per-hostname policy. Empty fields inherit the zone's.
type Host struct {
	Name string
	CA   string
	Mode string
	// ClientCertSignatures is "any", "post-quantum" or "" (the zone's).
	ClientCertSignatures string
	Upstream             string
	Allow                Allow
	CRL                  string
	CRLStale             string
}

// What a policy does with a CRL past its NextUpdate (crl_stale).
const (
	// CRLStaleWarn, the default, keeps using the stale CRL (it still
	// revokes everything it lists) and logs and counts it.
	CRLStaleWarn = "warn"
	// CRLStaleRefuse refuses every client certificate of the policy until
	// a fresh CRL is loaded, as OpenSSL (nginx's ssl_crl) does.
	CRLStaleRefuse = "refuse"
)

// Error is a configuration error at one key.
type Error struct {
	File string // may be ""
	Key  string // e.g. "hosts[1].ca"; "" for the document as a whole
	Line int    // 0 when unknown
	Err  error
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		if e.Line > 0 {
			fmt.Fprintf(&b, " (line %d)", e.Line)
		}
		b.WriteString(": ")
	} else if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Default returns the configuration used when no file is given.
func Default() *Config {
	return &Config{
		Listen:               DefaultListen,
		Admin:                DefaultAdmin,
		Mode:                 DefaultMode,
		ClientCertSignatures: DefaultSignatures,
		ZoneCA:               DefaultZoneCA,
		MaxHeaderBytes:       DefaultMaxHeaderBytes,
		UpstreamTimeout:      DefaultUpstreamTimeout,
		ShutdownTimeout:      DefaultShutdownTimeout,
		HandshakeTimeout:     DefaultHandshakeTimeout,
		ReadyMinRequests:     DefaultReadyMinRequests,
		AllowNoSNI:           true,
		ReadHeaderTimeout:    DefaultReadHeaderTimeout,
		IdleTimeout:          DefaultIdleTimeout,
		MaxConnections:       DefaultMaxConnections,
		MaxHandshakes:        DefaultMaxHandshakes,
		ReloadCheckInterval:  DefaultReloadCheck,
	}
}

// Load reads and validates a configuration file. It does not read the
// certificate files it names; that is the loader's job, which reports
// errors with the same file and key names.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Err: err}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, &Error{File: path, Err: err}
	}
	return Parse(data, path, filepath.Dir(abs))
}

// Parse decodes YAML; file names errors and dir resolves relative paths.
func Parse(data []byte, file, dir string) (*Config, error) {
	c := Default()
	c.File = file
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, &Error{File: file, Err: fmt.Errorf("not valid YAML: %w", err)}
	}
	p := &parser{file: file}
	// A document that is only "---" or comments is empty, like an empty file.
	if len(doc.Content) > 0 && doc.Content[0].Tag != "!!null" {
		p.top(doc.Content[0], c)
	}
	if p.err != nil {
		return nil, p.err
	}
	c.resolve(dir)
	c.lines = p.lines
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// resolve makes relative paths absolute against dir.
func (c *Config) resolve(dir string) {
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) || dir == "" {
			return p
		}
		return filepath.Join(dir, p)
	}
	if c.ZoneCA != CloudflareCA {
		c.ZoneCA = abs(c.ZoneCA)
	}
	c.CloudflareIPs = abs(c.CloudflareIPs)
	c.CRL = abs(c.CRL)
	c.SessionTicketKeys = abs(c.SessionTicketKeys)
	if c.ACME != nil {
		c.ACME.CARoot = abs(c.ACME.CARoot)
		c.ACME.Storage = abs(c.ACME.Storage)
	}
	for i := range c.Certificates {
		c.Certificates[i].Cert = abs(c.Certificates[i].Cert)
		c.Certificates[i].Key = abs(c.Certificates[i].Key)
	}
	for i := range c.Hosts {
		c.Hosts[i].CA = abs(c.Hosts[i].CA)
		c.Hosts[i].CRL = abs(c.Hosts[i].CRL)
		if u, ok := strings.CutPrefix(c.Hosts[i].Upstream, "unix://"); ok && !strings.HasPrefix(u, "/") {
			c.Hosts[i].Upstream = "unix://" + abs(u)
		}
	}
	if u, ok := strings.CutPrefix(c.Upstream, "unix://"); ok && !strings.HasPrefix(u, "/") {
		c.Upstream = "unix://" + abs(u)
	}
}

// Validate checks values that do not depend on files. It is run by Parse
// and again after command-line flags are applied.
func (c *Config) Validate() error {
	bad := func(key string, format string, args ...any) error {
		return c.KeyError(key, fmt.Errorf(format, args...))
	}
	if err := checkAddr(c.Listen); err != nil {
		return bad("listen", "%v", err)
	}
	if err := checkAddr(c.Admin); err != nil {
		return bad("admin", "%v", err)
	}
	if c.Upstream == "" {
		return bad("upstream", "required: where to send verified requests, e.g. http://127.0.0.1:8080")
	}
	if err := CheckUpstream(c.Upstream); err != nil {
		return bad("upstream", "%v", err)
	}
	if err := checkMode(c.Mode); err != nil {
		return bad("mode", "%v", err)
	}
	if err := checkCRLStale(c.CRLStale); err != nil {
		return bad("crl_stale", "%v", err)
	}
	if _, err := tlsconfig.ParseSignatures(c.ClientCertSignatures); err != nil {
		return bad("client_cert_signatures", "%v", err)
	}
	if c.ZoneCA == "" {
		return bad("zone_ca", "must be %q or a PEM bundle path", CloudflareCA)
	}
	for i, kp := range c.Certificates {
		if kp.Cert == "" || kp.Key == "" {
			return bad(fmt.Sprintf("certificates[%d]", i), "needs both cert and key")
		}
	}
	seen := map[string]int{}
	for i, h := range c.Hosts {
		key := fmt.Sprintf("hosts[%d]", i)
		if err := checkHostName(h.Name); err != nil {
			return bad(key+".name", "%v", err)
		}
		n := strings.ToLower(strings.TrimSuffix(h.Name, "."))
		if j, dup := seen[n]; dup {
			return bad(key+".name", "%q is already configured at hosts[%d]", h.Name, j)
		}
		seen[n] = i
		if h.Mode != "" {
			if err := checkMode(h.Mode); err != nil {
				return bad(key+".mode", "%v", err)
			}
		}
		if h.CRLStale != "" {
			if err := checkCRLStale(h.CRLStale); err != nil {
				return bad(key+".crl_stale", "%v", err)
			}
		}
		if h.ClientCertSignatures != "" {
			if _, err := tlsconfig.ParseSignatures(h.ClientCertSignatures); err != nil {
				return bad(key+".client_cert_signatures", "%v", err)
			}
		}
		if h.Upstream != "" {
			if err := CheckUpstream(h.Upstream); err != nil {
				return bad(key+".upstream", "%v", err)
			}
		}
	}
	if c.MaxHeaderBytes < 4096 || c.MaxHeaderBytes > 16<<20 {
		return bad("max_header_bytes", "%d is outside 4096..16777216", c.MaxHeaderBytes)
	}
	if c.CloudflareIPs != "" && len(c.CloudflareIPsRefresh.URLs) > 0 {
		return bad("cloudflare_ips_refresh", "cannot be used together with cloudflare_ips: choose a fixed file or a refreshed list")
	}
	for i, u := range c.CloudflareIPsRefresh.URLs {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" {
			return bad(fmt.Sprintf("cloudflare_ips_refresh.urls[%d]", i), "%q is not an http(s) URL", u)
		}
	}
	if len(c.CloudflareIPsRefresh.URLs) > 0 && c.CloudflareIPsRefresh.Interval < time.Minute {
		return bad("cloudflare_ips_refresh.interval", "must be at least 1m")
	}
	if c.ReadyMinRequests < 1 {
		return bad("ready_min_requests", "must be at least 1")
	}
	if c.RequireCloudflareSource && !c.TrustCloudflareHeaders {
		return bad("require_cloudflare_source", "only means something with trust_cloudflare_headers: true")
	}
	if a := c.ACME; a != nil {
		if len(a.Names) == 0 {
			return bad("acme.names", "list the names to obtain certificates for")
		}
		for i, n := range a.Names {
			if err := checkHostName(n); err != nil || strings.HasPrefix(n, "*.") {
				return bad(fmt.Sprintf("acme.names[%d]", i), "%q: want a host name (wildcards need DNS-01, which aopguard does not do)", n)
			}
		}
		switch a.Challenge {
		case "http-01":
			if a.HTTPListen == "" {
				return bad("acme.http_listen", "required for http-01: the address ACME's http-01 requests reach (port 80 from outside)")
			}
		case "tls-alpn-01":
		default:
			return bad("acme.challenge", "%q is not one of http-01, tls-alpn-01", a.Challenge)
		}
		if a.HTTPListen != "" {
			if err := checkAddr(a.HTTPListen); err != nil {
				return bad("acme.http_listen", "%v", err)
			}
		}
		if u, err := url.Parse(a.CA); err != nil || u.Scheme != "https" || u.Host == "" {
			return bad("acme.ca", "%q is not an https:// ACME directory URL", a.CA)
		}
		if a.CheckInterval < time.Second {
			return bad("acme.check_interval", "must be at least 1s")
		}
	}
	if pp := c.ProxyProtocol; pp != nil {
		if len(pp.Trusted) == 0 {
			return bad("proxy_protocol.trusted", "list the load balancers' addresses or CIDR ranges that send PROXY headers")
		}
		if pp.Timeout <= 0 || pp.Timeout > time.Minute {
			return bad("proxy_protocol.timeout", "must be a duration between 1ms and 1m, such as 5s")
		}
	}
	if c.MaxConnections < 1 {
		return bad("max_connections", "must be at least 1")
	}
	if c.MaxHandshakes < 1 {
		return bad("max_handshakes", "must be at least 1")
	}
	// In the order of the reference, so the first bad one is always the
	// one reported.
	for _, d := range []struct {
		key string
		d   time.Duration
	}{
		{"upstream_timeout", c.UpstreamTimeout},
		{"shutdown_timeout", c.ShutdownTimeout},
		{"handshake_timeout", c.HandshakeTimeout},
		{"read_header_timeout", c.ReadHeaderTimeout},
		{"idle_timeout", c.IdleTimeout},
		{"reload_check_interval", c.ReloadCheckInterval},
	} {
		if d.d <= 0 {
			return bad(d.key, "must be a positive duration such as 30s")
		}
	}
	return nil
}

// checkMode accepts what tlsconfig.ParseMode does: the mode names live
// there, with the modes, and nowhere else.
func checkMode(m string) error {
	_, err := tlsconfig.ParseMode(m)
	return err
}

func checkCRLStale(s string) error {
	if s == "" || s == CRLStaleWarn || s == CRLStaleRefuse {
		return nil
	}
	return fmt.Errorf("%q is not one of %s, %s", s, CRLStaleRefuse, CRLStaleWarn)
}

func checkAddr(a string) error {
	if _, _, err := net.SplitHostPort(a); err != nil {
		return fmt.Errorf("%q is not host:port (%v)", a, err)
	}
	return nil
}

// CheckUpstream validates an upstream URL: http://host[:port],
// https://host[:port], h2c://host[:port] (cleartext HTTP/2),
// h2://host[:port] (HTTP/2 over TLS) or unix:///absolute/path.sock.
func CheckUpstream(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %v", s, err)
	}
	switch u.Scheme {
	case "http", "https", "h2c", "h2":
		if u.Host == "" {
			return fmt.Errorf("%q has no host", s)
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("%q: a query or fragment makes no sense for an upstream", s)
		}
	case "unix":
		if u.Host != "" || !strings.HasPrefix(u.Path, "/") {
			return fmt.Errorf("%q: want unix:///absolute/path.sock", s)
		}
	default:
		return fmt.Errorf("%q: scheme must be http, https, h2c, h2 or unix", s)
	}
	return nil
}

func checkHostName(n string) error {
	if n == "" {
		return errors.New("required")
	}
	rest := strings.TrimSuffix(n, ".")
	if r, ok := strings.CutPrefix(rest, "*."); ok {
		rest = r
	}
	if rest == "" || strings.ContainsAny(rest, "*:/ ") {
		return fmt.Errorf("%q is not a host name or \"*.\" wildcard (one leading label only)", n)
	}
	if net.ParseIP(rest) != nil {
		return fmt.Errorf("%q is an IP address; direct-to-IP requests use the zone policy", n)
	}
	if strings.EqualFold(rest, tlsconfig.ZoneName) {
		return fmt.Errorf("%q is the name of the zone policy (hosts without an entry use it); a host by that name would share its metrics, logs and rollout evidence", n)
	}
	for _, label := range strings.Split(rest, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%q has an empty or over-long label", n)
		}
	}
	return nil
}
