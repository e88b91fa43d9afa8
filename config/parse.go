package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"
)

// parser walks the YAML tree by hand rather than unmarshalling into tagged
// structs, so every error can name the exact key path and line, and every
// key is checked against what that level accepts.
type parser struct {
	file  string
	err   *Error
	lines map[string]int // key path -> line, for errors found after parsing
}

func (p *parser) fail(key string, n *yaml.Node, format string, args ...any) {
	if p.err == nil {
		p.err = &Error{File: p.file, Key: key, Line: n.Line, Err: fmt.Errorf(format, args...)}
	}
}

func (p *parser) mark(key string, n *yaml.Node) {
	if p.lines == nil {
		p.lines = map[string]int{}
	}
	p.lines[key] = n.Line
}

// fields visits each key of a mapping node with the handler registered for
// it; any other key is an error.
func (p *parser) fields(path string, n *yaml.Node, handlers map[string]func(key string, v *yaml.Node)) {
	if n.Kind != yaml.MappingNode {
		p.fail(path, n, "want a mapping of keys, got %s", kindName(n))
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content) && p.err == nil; i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := k.Value
		if path != "" {
			key = path + "." + k.Value
		}
		h, ok := handlers[k.Value]
		if !ok {
			p.fail(key, k, "unknown key")
			return
		}
		if seen[k.Value] {
			p.fail(key, k, "given twice")
			return
		}
		seen[k.Value] = true
		p.mark(key, k)
		h(key, v)
	}
}

func (p *parser) str(dst *string) func(string, *yaml.Node) {
	return func(key string, v *yaml.Node) {
		if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
			p.fail(key, v, "want a string, got %s", kindName(v))
			return
		}
		*dst = v.Value
	}
}

func (p *parser) boolean(dst *bool) func(string, *yaml.Node) {
	return func(key string, v *yaml.Node) {
		if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" {
			p.fail(key, v, "want true or false, got %s", kindName(v))
			return
		}
		*dst = v.Value == "true" || v.Value == "True" || v.Value == "TRUE"
	}
}

// strs reads a list of strings.
func (p *parser) strs(dst *[]string) func(string, *yaml.Node) {
	return func(key string, v *yaml.Node) {
		p.list(key, v, func(key string, item *yaml.Node) {
			var s string
			p.str(&s)(key, item)
			*dst = append(*dst, s)
		})
	}
}

func (p *parser) allow(dst *Allow) func(string, *yaml.Node) {
	return func(key string, v *yaml.Node) {
		p.fields(key, v, map[string]func(string, *yaml.Node){
			"sha256":      p.strs(&dst.SHA256),
			"spki_sha256": p.strs(&dst.SPKISHA256),
			"dns":         p.strs(&dst.DNS),
			"cn":          p.strs(&dst.CN),
		})
	}
}

func (p *parser) integer(dst *int) func(string, *yaml.Node) {
	return func(key string, v *yaml.Node) {
		n, err := strconv.Atoi(v.Value)
		if v.Kind != yaml.ScalarNode || err != nil {
			p.fail(key, v, "want a whole number, got %q", v.Value)
			return
		}
		*dst = n
	}
}

func (p *parser) duration(dst *time.Duration) func(string, *yaml.Node) {
	return func(key string, v *yaml.Node) {
		d, err := time.ParseDuration(v.Value)
		if v.Kind != yaml.ScalarNode || err != nil {
			p.fail(key, v, "want a duration such as 30s or 2m, got %q", v.Value)
			return
		}
		*dst = d
	}
}

// list visits each item of a sequence node.
func (p *parser) list(key string, v *yaml.Node, each func(key string, item *yaml.Node)) {
	if v.Kind != yaml.SequenceNode {
		p.fail(key, v, "want a list, got %s", kindName(v))
		return
	}
	for i, item := range v.Content {
		if p.err != nil {
			return
		}
		k := fmt.Sprintf("%s[%d]", key, i)
		p.mark(k, item)
		each(k, item)
	}
}

func (p *parser) top(n *yaml.Node, c *Config) {
	p.fields("", n, map[string]func(string, *yaml.Node){
		"listen":                    p.str(&c.Listen),
		"admin":                     p.str(&c.Admin),
		"upstream":                  p.str(&c.Upstream),
		"mode":                      p.str(&c.Mode),
		"client_cert_signatures":    p.str(&c.ClientCertSignatures),
		"zone_ca":                   p.str(&c.ZoneCA),
		"max_header_bytes":          p.integer(&c.MaxHeaderBytes),
		"upstream_timeout":          p.duration(&c.UpstreamTimeout),
		"shutdown_timeout":          p.duration(&c.ShutdownTimeout),
		"handshake_timeout":         p.duration(&c.HandshakeTimeout),
		"cloudflare_ips":            p.str(&c.CloudflareIPs),
		"strict_hosts":              p.boolean(&c.StrictHosts),
		"allow_no_sni":              p.boolean(&c.AllowNoSNI),
		"allow":                     p.allow(&c.Allow),
		"crl":                       p.str(&c.CRL),
		"crl_stale":                 p.str(&c.CRLStale),
		"trust_cloudflare_headers":  p.boolean(&c.TrustCloudflareHeaders),
		"require_cloudflare_source": p.boolean(&c.RequireCloudflareSource),
		"read_header_timeout":       p.duration(&c.ReadHeaderTimeout),
		"idle_timeout":              p.duration(&c.IdleTimeout),
		"max_connections":           p.integer(&c.MaxConnections),
		"max_handshakes":            p.integer(&c.MaxHandshakes),
		"reload_check_interval":     p.duration(&c.ReloadCheckInterval),
		"acme": func(key string, v *yaml.Node) {
			a := &ACME{CA: DefaultACMECA, Challenge: "http-01", Storage: DefaultACMEStorage, CheckInterval: DefaultACMECheckInterval}
			c.ACME = a
			p.fields(key, v, map[string]func(string, *yaml.Node){
				"email":          p.str(&a.Email),
				"ca":             p.str(&a.CA),
				"ca_root":        p.str(&a.CARoot),
				"names":          p.strs(&a.Names),
				"challenge":      p.str(&a.Challenge),
				"http_listen":    p.str(&a.HTTPListen),
				"storage":        p.str(&a.Storage),
				"check_interval": p.duration(&a.CheckInterval),
			})
		},
		"ready_min_requests":  p.integer(&c.ReadyMinRequests),
		"session_ticket_keys": p.str(&c.SessionTicketKeys),
		"proxy_protocol": func(key string, v *yaml.Node) {
			pp := &ProxyProtocol{Timeout: DefaultProxyTimeout}
			c.ProxyProtocol = pp
			p.fields(key, v, map[string]func(string, *yaml.Node){
				"trusted": func(key string, v *yaml.Node) {
					p.list(key, v, func(key string, item *yaml.Node) {
						var s string
						p.str(&s)(key, item)
						if p.err != nil {
							return
						}
						pfx, err := parsePrefix(s)
						if err != nil {
							p.fail(key, item, "%v", err)
							return
						}
						pp.Trusted = append(pp.Trusted, pfx)
					})
				},
				"timeout": p.duration(&pp.Timeout),
			})
		},
		"cloudflare_ips_refresh": func(key string, v *yaml.Node) {
			c.CloudflareIPsRefresh.Interval = DefaultRefreshInterval
			p.fields(key, v, map[string]func(string, *yaml.Node){
				"interval": p.duration(&c.CloudflareIPsRefresh.Interval),
				"urls": func(key string, v *yaml.Node) {
					p.list(key, v, func(key string, item *yaml.Node) {
						var u string
						p.str(&u)(key, item)
						c.CloudflareIPsRefresh.URLs = append(c.CloudflareIPsRefresh.URLs, u)
					})
				},
			})
		},
		"certificates": func(key string, v *yaml.Node) {
			p.list(key, v, func(key string, item *yaml.Node) {
				var kp KeyPair
				p.fields(key, item, map[string]func(string, *yaml.Node){
					"cert": p.str(&kp.Cert),
					"key":  p.str(&kp.Key),
				})
				c.Certificates = append(c.Certificates, kp)
			})
		},
		"hosts": func(key string, v *yaml.Node) {
			p.list(key, v, func(key string, item *yaml.Node) {
				var h Host
				p.fields(key, item, map[string]func(string, *yaml.Node){
					"name":                   p.str(&h.Name),
					"ca":                     p.str(&h.CA),
					"mode":                   p.str(&h.Mode),
					"client_cert_signatures": p.str(&h.ClientCertSignatures),
					"upstream":               p.str(&h.Upstream),
					"allow":                  p.allow(&h.Allow),
					"crl":                    p.str(&h.CRL),
					"crl_stale":              p.str(&h.CRLStale),
				})
				c.Hosts = append(c.Hosts, h)
			})
		},
	})
}

// parsePrefix reads a CIDR range, or a single address as a range of one.
// A range with host bits set is refused: it was most likely mistyped.
func parsePrefix(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q: an address with a zone is not a peer address", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR range", s)
	}
	if pfx != pfx.Masked() {
		return netip.Prefix{}, fmt.Errorf("%q has bits set beyond its /%d: did you mean %s?", s, pfx.Bits(), pfx.Masked())
	}
	return pfx, nil
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	if n.Tag == "!!null" {
		return "nothing"
	}
	return fmt.Sprintf("%q", n.Value)
}
