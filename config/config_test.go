package config_test

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aopguard/aopguard/config"
)

const testFile = "aopguard.yaml"

// testDir is the folder relative paths resolve against in these tests.
var testDir = filepath.Join(string(filepath.Separator), "etc", "aopguard")

func inDir(p ...string) string { return filepath.Join(append([]string{testDir}, p...)...) }

func TestParseErrors(t *testing.T) {
	t.Parallel()
	const up = "upstream: http://127.0.0.1:8080\n"
	tests := []struct {
		name string
		in   string
		dir  string // default testDir
		key  string
		line int // 0: the key has no line (it was never written)
		// anyLine skips the line check: the key is missing, so the line of
		// its parent (or none) are both reasonable.
		anyLine bool
		msg     string
	}{
		{
			name: "bad crl_stale",
			in:   up + "crl_stale: ignore\n",
			key:  "crl_stale", line: 2, msg: `"ignore" is not one of refuse, warn`,
		},
		{
			name: "bad host crl_stale",
			in:   up + "hosts:\n  - name: a.example.com\n    crl_stale: Refuse\n",
			key:  "hosts[0].crl_stale", line: 4, msg: `"Refuse" is not one of refuse, warn`,
		},
		{
			name: "several bad durations: the first in the reference's order",
			in:   up + "reload_check_interval: -1s\nidle_timeout: -1s\nupstream_timeout: -1s\n",
			key:  "upstream_timeout", line: 4, msg: "must be a positive duration",
		},
		{
			name: "unknown top-level key",
			in:   up + "bogus: 1\n",
			key:  "bogus", line: 2, msg: "unknown key",
		},
		{
			name: "proxy_protocol without trusted peers",
			in:   up + "proxy_protocol:\n  timeout: 5s\n",
			key:  "proxy_protocol.trusted", anyLine: true, msg: "list the load balancers",
		},
		{
			name: "proxy_protocol trusted not a range",
			in:   up + "proxy_protocol:\n  trusted: [10.0.0.0/8, balancer.internal]\n",
			key:  "proxy_protocol.trusted[1]", line: 3, msg: `"balancer.internal" is not an IP address or CIDR range`,
		},
		{
			name: "proxy_protocol trusted with host bits",
			in:   up + "proxy_protocol:\n  trusted:\n    - 10.1.2.3/8\n",
			key:  "proxy_protocol.trusted[0]", line: 4, msg: "did you mean 10.0.0.0/8?",
		},
		{
			name: "proxy_protocol timeout too long",
			in:   up + "proxy_protocol:\n  trusted: [10.0.0.0/8]\n  timeout: 5m\n",
			key:  "proxy_protocol.timeout", line: 4, msg: "between 1ms and 1m",
		},
		{
			name: "proxy_protocol unknown key",
			in:   up + "proxy_protocol:\n  trust: [10.0.0.0/8]\n",
			key:  "proxy_protocol.trust", line: 3, msg: "unknown key",
		},
		{
			name: "session_ticket_keys not a string",
			in:   up + "session_ticket_keys: [a, b]\n",
			key:  "session_ticket_keys", line: 2, msg: "want a string",
		},
		{
			name: "refresh URL not http",
			in:   up + "cloudflare_ips_refresh:\n  urls: [ftp://x/ips]\n",
			key:  "cloudflare_ips_refresh.urls[0]", line: 3, msg: `"ftp://x/ips" is not an http(s) URL`,
		},
		{
			name: "refresh too often",
			in:   up + "cloudflare_ips_refresh:\n  urls: [https://x/ips]\n  interval: 10s\n",
			key:  "cloudflare_ips_refresh.interval", line: 4, msg: "at least 1m",
		},
		{
			name: "fixed and refreshed ranges",
			in:   up + "cloudflare_ips: ips.txt\ncloudflare_ips_refresh:\n  urls: [https://x/ips]\n",
			key:  "cloudflare_ips_refresh", line: 3, msg: "cannot be used together with cloudflare_ips",
		},
		{
			name: "unknown refresh key",
			in:   up + "cloudflare_ips_refresh:\n  url: https://x/ips\n",
			key:  "cloudflare_ips_refresh.url", line: 3, msg: "unknown key",
		},
		{
			name: "acme without names",
			in:   up + "acme:\n  email: ops@example.com\n",
			key:  "acme.names", line: 2, anyLine: true, msg: "list the names",
		},
		{
			name: "acme wildcard name",
			in:   up + "acme:\n  names: [\"*.example.com\"]\n  challenge: tls-alpn-01\n",
			key:  "acme.names[0]", line: 3, msg: "wildcards need DNS-01",
		},
		{
			name: "acme http-01 without listener",
			in:   up + "acme:\n  names: [app.example.com]\n",
			key:  "acme.http_listen", anyLine: true, msg: "required for http-01",
		},
		{
			name: "acme unknown challenge",
			in:   up + "acme:\n  names: [app.example.com]\n  challenge: dns-01\n",
			key:  "acme.challenge", line: 4, msg: `"dns-01" is not one of http-01, tls-alpn-01`,
		},
		{
			name: "acme plain http directory",
			in:   up + "acme:\n  names: [app.example.com]\n  challenge: tls-alpn-01\n  ca: http://acme.local/dir\n",
			key:  "acme.ca", line: 5, msg: "not an https:// ACME directory URL",
		},
		{
			name: "bool as string",
			in:   up + "strict_hosts: \"yes\"\n",
			key:  "strict_hosts", line: 2, msg: "want true or false",
		},
		{
			name: "unknown allow rule",
			in:   up + "hosts:\n  - name: a.example.com\n    allow:\n      subject: [x]\n",
			key:  "hosts[0].allow.subject", line: 5, msg: "unknown key",
		},
		{
			name: "allow rule not a list",
			in:   up + "allow:\n  cn: edge\n",
			key:  "allow.cn", line: 3, msg: "want a list",
		},
		{
			name: "require_cloudflare_source alone",
			in:   up + "require_cloudflare_source: true\n",
			key:  "require_cloudflare_source", line: 2, msg: "only means something with trust_cloudflare_headers",
		},
		{
			name: "max_handshakes zero",
			in:   up + "max_handshakes: 0\n",
			key:  "max_handshakes", line: 2, msg: "at least 1",
		},
		{
			name: "ready_min_requests zero",
			in:   up + "ready_min_requests: 0\n",
			key:  "ready_min_requests", line: 2, msg: "at least 1",
		},
		{
			name: "unknown key in second host",
			in:   up + "hosts:\n  - name: a.example.com\n  - name: b.example.com\n    bogus: x\n",
			key:  "hosts[1].bogus", line: 5, msg: "unknown key",
		},
		{
			name: "unknown key in certificates",
			in:   up + "certificates:\n  - cert: a.pem\n    key: a.key\n    chain: b.pem\n",
			key:  "certificates[0].chain", line: 5, msg: "unknown key",
		},
		{
			name: "misspelt host mode",
			in:   up + "hosts:\n  - name: a.example.com\n    mode: requir\n",
			key:  "hosts[0].mode", line: 4, msg: `"requir" is not one of off, log-only, require`,
		},
		{
			name: "misspelt zone mode",
			in:   "mode: requir\n" + up,
			key:  "mode", line: 1, msg: `"requir" is not one of`,
		},
		{
			name: "bad zone client_cert_signatures",
			in:   up + "client_cert_signatures: pq\n",
			key:  "client_cert_signatures", line: 2, msg: `"pq" is not one of any, post-quantum`,
		},
		{
			name: "bad host client_cert_signatures",
			in:   up + "hosts:\n  - name: a.example.com\n    client_cert_signatures: ml-dsa\n",
			key:  "hosts[0].client_cert_signatures", line: 4, msg: `"ml-dsa" is not one of any, post-quantum`,
		},
		{
			name: "client_cert_signatures is a list",
			in:   up + "client_cert_signatures: [post-quantum]\n",
			key:  "client_cert_signatures", line: 2, msg: "want a string",
		},
		{
			name: "hosts is a string",
			in:   up + "hosts: x\n",
			key:  "hosts", line: 2, msg: `want a list, got "x"`,
		},
		{
			name: "host is a string",
			in:   up + "hosts:\n  - a.example.com\n",
			key:  "hosts[0]", line: 3, msg: "want a mapping of keys",
		},
		{
			name: "upstream is a list",
			in:   "upstream: [a, b]\n",
			key:  "upstream", line: 1, msg: "want a string, got a list",
		},
		{
			name: "upstream is null",
			in:   "upstream: ~\n",
			key:  "upstream", line: 1, msg: "want a string, got nothing",
		},
		{
			name: "duplicate host names differ in case and trailing dot",
			in:   up + "hosts:\n  - name: Shop.Example.com\n  - name: api.example.com\n  - name: shop.example.COM.\n",
			key:  "hosts[2].name", line: 5, msg: "already configured at hosts[0]",
		},
		{
			name: "duplicate wildcards",
			in:   up + "hosts:\n  - name: '*.example.com'\n  - name: '*.EXAMPLE.com'\n",
			key:  "hosts[1].name", line: 4, msg: "already configured at hosts[0]",
		},
		{
			name: "two wildcard labels",
			in:   up + "hosts:\n  - name: '*.*.example.com'\n",
			key:  "hosts[0].name", line: 3, msg: "one leading label only",
		},
		{
			name: "wildcard in the middle",
			in:   up + "hosts:\n  - name: foo.*.com\n",
			key:  "hosts[0].name", line: 3, msg: "one leading label only",
		},
		{
			name: "bare wildcard",
			in:   up + "hosts:\n  - name: '*.'\n",
			key:  "hosts[0].name", line: 3, msg: "not a host name",
		},
		{
			name: "IPv4 address as host name",
			in:   up + "hosts:\n  - name: 192.0.2.1\n",
			key:  "hosts[0].name", line: 3, msg: "is an IP address",
		},
		{
			name: "IPv6 address as host name",
			in:   up + "hosts:\n  - name: '::1'\n",
			key:  "hosts[0].name", line: 3, msg: "not a host name",
		},
		{
			name: "host named like the zone policy",
			in:   up + "hosts:\n  - name: _zone\n",
			key:  "hosts[0].name", line: 3, msg: "name of the zone policy",
		},
		{
			name: "host named like the zone policy, upper case with a dot",
			in:   up + "hosts:\n  - name: _ZONE.\n",
			key:  "hosts[0].name", line: 3, msg: "name of the zone policy",
		},
		{
			name: "empty label",
			in:   up + "hosts:\n  - name: a..example.com\n",
			key:  "hosts[0].name", line: 3, msg: "empty or over-long label",
		},
		{
			name: "host without a name",
			in:   up + "hosts:\n  - mode: off\n",
			key:  "hosts[0].name", anyLine: true, msg: "required",
		},
		{
			name: "ftp upstream",
			in:   "upstream: ftp://x\n",
			key:  "upstream", line: 1, msg: "scheme must be http, https, h2c, h2 or unix",
		},
		{
			name: "host ftp upstream",
			in:   up + "hosts:\n  - name: a.example.com\n    upstream: ftp://x\n",
			key:  "hosts[0].upstream", line: 4, msg: "scheme must be http, https, h2c, h2 or unix",
		},
		{
			name: "h2c upstream without host",
			in:   "upstream: h2c://\n",
			key:  "upstream", line: 1, msg: `"h2c://" has no host`,
		},
		{
			name: "host h2 upstream with query",
			in:   up + "hosts:\n  - name: a.example.com\n    mode: require\n    upstream: h2://app:443/?x=1\n",
			key:  "hosts[0].upstream", line: 5, msg: "query or fragment",
		},
		{
			name: "upstream without scheme",
			in:   "upstream: 127.0.0.1:8080\n",
			key:  "upstream", line: 1, msg: "127.0.0.1:8080",
		},
		{
			name: "upstream with query",
			in:   "upstream: http://x/?a=b\n",
			key:  "upstream", line: 1, msg: "query or fragment",
		},
		{
			name: "relative unix socket with no folder to resolve against",
			in:   "upstream: unix://app.sock\n",
			dir:  "-",
			key:  "upstream", line: 1, msg: "want unix:///absolute/path.sock",
		},
		{
			name: "missing upstream",
			in:   "listen: ':443'\n",
			key:  "upstream", line: 0, msg: "required",
		},
		{
			name: "certificate without key",
			in:   up + "certificates:\n  - cert: origin.pem\n",
			key:  "certificates[0]", line: 3, msg: "needs both cert and key",
		},
		{
			name: "second certificate without cert",
			in:   up + "certificates:\n  - cert: a.pem\n    key: a.key\n  - key: b.key\n",
			key:  "certificates[1]", line: 5, msg: "needs both cert and key",
		},
		{
			name: "bad duration",
			in:   up + "upstream_timeout: 5 minutes\n",
			key:  "upstream_timeout", line: 2, msg: `want a duration such as 30s or 2m, got "5 minutes"`,
		},
		{
			name: "duration without unit",
			in:   up + "handshake_timeout: 10\n",
			key:  "handshake_timeout", line: 2, msg: "want a duration",
		},
		{
			name: "negative duration",
			in:   up + "shutdown_timeout: -1s\n",
			key:  "shutdown_timeout", line: 2, msg: "must be a positive duration",
		},
		{
			name: "zero duration",
			in:   up + "upstream_timeout: 0s\n",
			key:  "upstream_timeout", line: 2, msg: "must be a positive duration",
		},
		{
			name: "max_header_bytes too small",
			in:   up + "max_header_bytes: 4095\n",
			key:  "max_header_bytes", line: 2, msg: "4095 is outside 4096..16777216",
		},
		{
			name: "max_header_bytes too large",
			in:   up + "max_header_bytes: 16777217\n",
			key:  "max_header_bytes", line: 2, msg: "outside 4096..16777216",
		},
		{
			name: "max_header_bytes not a number",
			in:   up + "max_header_bytes: 64k\n",
			key:  "max_header_bytes", line: 2, msg: `want a whole number, got "64k"`,
		},
		{
			name: "key given twice",
			in:   up + "mode: off\nmode: require\n",
			key:  "mode", line: 3, msg: "given twice",
		},
		{
			name: "host key given twice",
			in:   up + "hosts:\n  - name: a.example.com\n    ca: a.pem\n    ca: b.pem\n",
			key:  "hosts[0].ca", line: 5, msg: "given twice",
		},
		{
			name: "listen is not host:port",
			in:   up + "listen: 8443\n",
			key:  "listen", line: 2, msg: `"8443" is not host:port`,
		},
		{
			name: "admin is not host:port",
			in:   up + "admin: localhost\n",
			key:  "admin", line: 2, msg: "is not host:port",
		},
		{
			name: "empty zone_ca",
			in:   up + "zone_ca: ''\n",
			key:  "zone_ca", line: 2, msg: `must be "cloudflare" or a PEM bundle path`,
		},
		{
			name: "document is a list",
			in:   "- upstream: http://x\n",
			key:  "", line: 1, msg: "want a mapping of keys",
		},
		{
			name: "invalid YAML",
			in:   "upstream: [http://x\n",
			key:  "", line: 0, msg: "not valid YAML",
		},
		{
			name: "tab indentation",
			in:   "hosts:\n\t- name: a\n",
			key:  "", line: 0, msg: "not valid YAML",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := testDir
			if tt.dir == "-" {
				dir = ""
			}
			c, err := config.Parse([]byte(tt.in), testFile, dir)
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", c)
			}
			if c != nil {
				t.Errorf("Parse returned a config along with error %v", err)
			}
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is %T, want *config.Error", err, err)
			}
			if tt.anyLine {
				tt.line = ce.Line
			}
			if ce.File != testFile || ce.Key != tt.key || ce.Line != tt.line {
				t.Errorf("Error{File: %q, Key: %q, Line: %d}, want {%q, %q, %d}", ce.File, ce.Key, ce.Line, testFile, tt.key, tt.line)
			}
			// The message names the file, the key path and the line.
			want := testFile + ": "
			switch {
			case tt.key != "" && tt.line > 0:
				want += tt.key + " (line " + itoa(tt.line) + "): "
			case tt.key != "":
				want += tt.key + ": "
			case tt.line > 0:
				want += "line " + itoa(tt.line) + ": "
			}
			if msg := err.Error(); !strings.HasPrefix(msg, want) || !strings.Contains(msg, tt.msg) {
				t.Errorf("error %q\nwant prefix %q and substring %q", msg, want, tt.msg)
			}
		})
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

const fullConfig = `# a complete configuration
listen: "0.0.0.0:443"
admin: "127.0.0.1:9191"
upstream: http://127.0.0.1:8080
mode: log-only
client_cert_signatures: any
zone_ca: ca/zone.pem
certificates:
  - cert: tls/origin.pem
    key: /secrets/origin.key
  - cert: /tls/second.pem
    key: tls/second.key
hosts:
  - name: shop.example.com
    ca: ca/shop.pem
    mode: require
    client_cert_signatures: post-quantum
    upstream: unix://run/shop.sock
  - name: "*.api.example.com"
    mode: "off"
    upstream: https://10.0.0.2:8443
  - name: Legacy.Example.com.
    ca: /etc/pki/legacy.pem
    upstream: unix:///var/run/legacy.sock
  - name: plain.example.com
    allow:
      cn: [edge.example.net]
      spki_sha256: ["Zm9vYmFyYmF6Zm9vYmFyYmF6Zm9vYmFyYmF6MTIzNDU="]
    crl: crl/plain.crl
strict_hosts: true
allow_no_sni: false
allow:
  sha256: ["9A:1A:C2:B4"]
  dns: [origin-pull.example.net]
crl: /etc/pki/zone.crl
trust_cloudflare_headers: true
require_cloudflare_source: true
read_header_timeout: 5s
idle_timeout: 1m
max_connections: 1000
max_handshakes: 64
reload_check_interval: 30s
max_header_bytes: 131072
upstream_timeout: 2m
shutdown_timeout: 45s
handshake_timeout: 5s
cloudflare_ips_refresh:
  urls: [https://www.cloudflare.com/ips-v4, https://www.cloudflare.com/ips-v6]
  interval: 12h
ready_min_requests: 20
proxy_protocol:
  trusted: [10.0.0.0/8, 192.0.2.7, "2001:db8::/32"]
  timeout: 2s
session_ticket_keys: secrets/tickets.keys
`

func TestParseFull(t *testing.T) {
	t.Parallel()
	got, err := config.Parse([]byte(fullConfig), testFile, testDir)
	if err != nil {
		t.Fatal(err)
	}
	want := &config.Config{
		File:                 testFile,
		Listen:               "0.0.0.0:443",
		Admin:                "127.0.0.1:9191",
		Upstream:             "http://127.0.0.1:8080",
		Mode:                 "log-only",
		ClientCertSignatures: "any",
		ZoneCA:               inDir("ca", "zone.pem"),
		Certificates: []config.KeyPair{
			{Cert: inDir("tls", "origin.pem"), Key: "/secrets/origin.key"},
			{Cert: "/tls/second.pem", Key: inDir("tls", "second.key")},
		},
		Hosts: []config.Host{
			{Name: "shop.example.com", CA: inDir("ca", "shop.pem"), Mode: "require", ClientCertSignatures: "post-quantum", Upstream: "unix://" + inDir("run", "shop.sock")},
			{Name: "*.api.example.com", Mode: "off", Upstream: "https://10.0.0.2:8443"},
			{Name: "Legacy.Example.com.", CA: "/etc/pki/legacy.pem", Upstream: "unix:///var/run/legacy.sock"},
			{Name: "plain.example.com", CRL: inDir("crl", "plain.crl"), Allow: config.Allow{
				CN: []string{"edge.example.net"}, SPKISHA256: []string{"Zm9vYmFyYmF6Zm9vYmFyYmF6Zm9vYmFyYmF6MTIzNDU="},
			}},
		},
		StrictHosts:             true,
		AllowNoSNI:              false,
		Allow:                   config.Allow{SHA256: []string{"9A:1A:C2:B4"}, DNS: []string{"origin-pull.example.net"}},
		CRL:                     "/etc/pki/zone.crl",
		TrustCloudflareHeaders:  true,
		RequireCloudflareSource: true,
		ReadHeaderTimeout:       5 * time.Second,
		IdleTimeout:             time.Minute,
		MaxConnections:          1000,
		MaxHandshakes:           64,
		ReloadCheckInterval:     30 * time.Second,
		MaxHeaderBytes:          131072,
		UpstreamTimeout:         2 * time.Minute,
		ShutdownTimeout:         45 * time.Second,
		HandshakeTimeout:        5 * time.Second,
		CloudflareIPsRefresh: config.Refresh{
			URLs:     []string{"https://www.cloudflare.com/ips-v4", "https://www.cloudflare.com/ips-v6"},
			Interval: 12 * time.Hour,
		},
		ReadyMinRequests: 20,
		ProxyProtocol: &config.ProxyProtocol{Trusted: []netip.Prefix{
			netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("2001:db8::/32"),
		}, Timeout: 2 * time.Second},
		SessionTicketKeys: inDir("secrets", "tickets.keys"),
	}
	if !reflect.DeepEqual(config.WithoutLines(got), want) {
		t.Errorf("Parse(full) =\n%+v\nwant\n%+v", got, want)
	}
}

func TestParseResolvesPaths(t *testing.T) {
	t.Parallel()
	const up = "upstream: http://127.0.0.1:8080\n"
	type view struct{ ZoneCA, Cert, Key, HostCA, Upstream, HostUpstream string }
	get := func(c *config.Config) view {
		v := view{ZoneCA: c.ZoneCA, Upstream: c.Upstream}
		if len(c.Certificates) > 0 {
			v.Cert, v.Key = c.Certificates[0].Cert, c.Certificates[0].Key
		}
		if len(c.Hosts) > 0 {
			v.HostCA, v.HostUpstream = c.Hosts[0].CA, c.Hosts[0].Upstream
		}
		return v
	}
	tests := []struct {
		name string
		in   string
		dir  string
		want view
	}{
		{
			name: "relative paths join dir",
			in: "upstream: unix://app.sock\nzone_ca: zone.pem\ncertificates:\n  - {cert: c.pem, key: keys/k.pem}\n" +
				"hosts:\n  - {name: a.example.com, ca: ./cas/a.pem, upstream: 'unix://./run/a.sock'}\n",
			dir: testDir,
			want: view{
				ZoneCA: inDir("zone.pem"), Cert: inDir("c.pem"), Key: inDir("keys", "k.pem"),
				HostCA: inDir("cas", "a.pem"), Upstream: "unix://" + inDir("app.sock"), HostUpstream: "unix://" + inDir("run", "a.sock"),
			},
		},
		{
			name: "parent references are cleaned",
			in:   up + "zone_ca: ../shared/zone.pem\n",
			dir:  testDir,
			want: view{ZoneCA: filepath.Join(testDir, "..", "shared", "zone.pem"), Upstream: "http://127.0.0.1:8080"},
		},
		{
			name: "absolute paths are kept",
			in: "upstream: unix:///run/app.sock\nzone_ca: /pki/zone.pem\ncertificates:\n  - {cert: /pki/c.pem, key: /pki/k.pem}\n" +
				"hosts:\n  - {name: a.example.com, ca: /pki/a.pem, upstream: 'unix:///run/a.sock'}\n",
			dir:  testDir,
			want: view{ZoneCA: "/pki/zone.pem", Cert: "/pki/c.pem", Key: "/pki/k.pem", HostCA: "/pki/a.pem", Upstream: "unix:///run/app.sock", HostUpstream: "unix:///run/a.sock"},
		},
		{
			name: "zone_ca cloudflare is not a path",
			in:   up + "zone_ca: cloudflare\n",
			dir:  testDir,
			want: view{ZoneCA: config.CloudflareCA, Upstream: "http://127.0.0.1:8080"},
		},
		{
			name: "default zone_ca is cloudflare",
			in:   up,
			dir:  testDir,
			want: view{ZoneCA: config.CloudflareCA, Upstream: "http://127.0.0.1:8080"},
		},
		{
			name: "http upstreams are not paths",
			in:   up + "hosts:\n  - {name: a.example.com, upstream: 'https://b:8443'}\n",
			dir:  testDir,
			want: view{ZoneCA: config.CloudflareCA, Upstream: "http://127.0.0.1:8080", HostUpstream: "https://b:8443"},
		},
		{
			name: "no dir leaves relative paths alone",
			in:   up + "zone_ca: zone.pem\ncertificates:\n  - {cert: c.pem, key: k.pem}\nhosts:\n  - {name: a.example.com, ca: a.pem}\n",
			dir:  "",
			want: view{ZoneCA: "zone.pem", Cert: "c.pem", Key: "k.pem", HostCA: "a.pem", Upstream: "http://127.0.0.1:8080"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := config.Parse([]byte(tt.in), testFile, tt.dir)
			if err != nil {
				t.Fatal(err)
			}
			if got := get(c); got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseDefaults(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		"upstream: http://127.0.0.1:8080\n",
		"# comment\nupstream: http://127.0.0.1:8080 # trailing\n",
		"---\nupstream: http://127.0.0.1:8080\n",
	} {
		c, err := config.Parse([]byte(in), testFile, testDir)
		if err != nil {
			t.Fatalf("Parse(%q): %v", in, err)
		}
		want := config.Default()
		want.File = testFile
		want.Upstream = "http://127.0.0.1:8080"
		if !reflect.DeepEqual(config.WithoutLines(c), want) {
			t.Errorf("Parse(%q) =\n%+v\nwant defaults\n%+v", in, c, want)
		}
	}
	d := config.Default()
	if d.Listen != ":8443" || d.Admin != "127.0.0.1:9090" || d.Mode != "require" || d.ZoneCA != "cloudflare" ||
		d.MaxHeaderBytes != 64<<10 || d.UpstreamTimeout != time.Minute || d.ShutdownTimeout != 30*time.Second ||
		d.HandshakeTimeout != 10*time.Second || d.Upstream != "" {
		t.Errorf("Default() = %+v", d)
	}
	// Each call returns a fresh value.
	d.Listen = "changed"
	if config.Default().Listen == "changed" {
		t.Error("Default() returns shared state")
	}
}

func TestParseModes(t *testing.T) {
	t.Parallel()
	// YAML 1.1 would read a bare off as false; the parser must keep the word.
	for _, m := range []string{"off", "log-only", "require"} {
		c, err := config.Parse([]byte("upstream: http://x\nmode: "+m+"\nhosts:\n  - {name: a.example.com, mode: "+m+"}\n"), testFile, testDir)
		if err != nil {
			t.Fatalf("mode %s: %v", m, err)
		}
		if c.Mode != m || c.Hosts[0].Mode != m {
			t.Errorf("mode %s decoded as %q / %q", m, c.Mode, c.Hosts[0].Mode)
		}
	}
}

func TestParseEmpty(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"", "\n", "# only a comment\n"} {
		_, err := config.Parse([]byte(in), testFile, testDir)
		var ce *config.Error
		if !errors.As(err, &ce) || ce.Key != "upstream" || !strings.Contains(err.Error(), "required") {
			t.Errorf("Parse(%q) error = %v; want only the missing upstream", in, err)
		}
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "aopguard.yaml")
	body := "upstream: unix://app.sock\nzone_ca: ca.pem\nhosts:\n  - {name: a.example.com, ca: hosts/a.pem}\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.File != path {
		t.Errorf("File = %q, want %q", c.File, path)
	}
	if want := filepath.Join(dir, "ca.pem"); c.ZoneCA != want {
		t.Errorf("ZoneCA = %q, want %q", c.ZoneCA, want)
	}
	if want := filepath.Join(dir, "hosts", "a.pem"); c.Hosts[0].CA != want {
		t.Errorf("hosts[0].ca = %q, want %q", c.Hosts[0].CA, want)
	}
	if want := "unix://" + filepath.Join(dir, "app.sock"); c.Upstream != want {
		t.Errorf("Upstream = %q, want %q", c.Upstream, want)
	}

	t.Run("errors name the file", func(t *testing.T) {
		bad := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(bad, []byte("upstream: http://x\nmode: strict\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := config.Load(bad)
		var ce *config.Error
		if !errors.As(err, &ce) || ce.File != bad || ce.Key != "mode" || ce.Line != 2 {
			t.Fatalf("Load(bad) = %v (%+v)", err, ce)
		}
		if !strings.HasPrefix(err.Error(), bad+": mode (line 2): ") {
			t.Errorf("error %q", err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		missing := filepath.Join(dir, "missing.yaml")
		_, err := config.Load(missing)
		var ce *config.Error
		if !errors.As(err, &ce) || ce.File != missing || !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Load(missing) = %v", err)
		}
		if !strings.Contains(err.Error(), missing) {
			t.Errorf("error %q does not name the file", err)
		}
	})
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(*config.Config)
		key    string
	}{
		{"defaults plus upstream", func(c *config.Config) {}, ""},
		{"flag sets a bad mode", func(c *config.Config) { c.Mode = "enforce" }, "mode"},
		{"flag sets a bad listen", func(c *config.Config) { c.Listen = "nowhere" }, "listen"},
		{"flag clears upstream", func(c *config.Config) { c.Upstream = "" }, "upstream"},
		{"bad host upstream", func(c *config.Config) {
			c.Hosts = []config.Host{{Name: "a.example.com", Upstream: "unix://rel.sock"}}
		}, "hosts[0].upstream"},
		{"zero handshake timeout", func(c *config.Config) { c.HandshakeTimeout = 0 }, "handshake_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := config.Default()
			c.File = "flags"
			c.Upstream = "http://127.0.0.1:8080"
			tt.change(c)
			err := c.Validate()
			if tt.key == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var ce *config.Error
			if !errors.As(err, &ce) || ce.Key != tt.key || ce.File != "flags" {
				t.Fatalf("Validate = %v, want *config.Error at %s in flags", err, tt.key)
			}
		})
	}
}

func TestCheckUpstream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in string
		ok bool
	}{
		{"http://127.0.0.1:8080", true},
		{"https://backend.internal", true},
		{"http://backend/prefix", true},
		{"unix:///run/app.sock", true},
		{"h2c://127.0.0.1:50051", true},
		{"h2://app:443", true},
		{"h2://app.internal", true},
		{"h2c://", false},
		{"h2:///path", false},
		{"h2c://h:1/?q=1", false},
		{"h3://app:443", false},
		{"grpc://app:443", false},
		{"http://", false},
		{"https:///path", false},
		{"http://h/?q=1", false},
		{"http://h/#frag", false},
		{"ftp://x", false},
		{"unix://relative.sock", false},
		{"unix:relative.sock", false},
		{"127.0.0.1:8080", false},
		{"localhost:8080", false},
		{"", false},
		{"http://[::1", false},
	}
	for _, tt := range tests {
		err := config.CheckUpstream(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("CheckUpstream(%q) = %v, want ok=%v", tt.in, err, tt.ok)
		}
		if err != nil && tt.in != "" && !strings.Contains(err.Error(), tt.in) {
			t.Errorf("CheckUpstream(%q) error %q does not quote the value", tt.in, err)
		}
	}
}

func TestErrorFormat(t *testing.T) {
	t.Parallel()
	inner := errors.New("boom")
	tests := []struct {
		e    config.Error
		want string
	}{
		{config.Error{File: "f.yaml", Key: "hosts[1].ca", Line: 7, Err: inner}, "f.yaml: hosts[1].ca (line 7): boom"},
		{config.Error{File: "f.yaml", Key: "upstream", Err: inner}, "f.yaml: upstream: boom"},
		{config.Error{File: "f.yaml", Line: 3, Err: inner}, "f.yaml: line 3: boom"},
		{config.Error{Key: "mode", Line: 2, Err: inner}, "mode (line 2): boom"},
		{config.Error{Err: inner}, "boom"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
		if !errors.Is(&tt.e, inner) {
			t.Errorf("%q does not unwrap to its cause", tt.want)
		}
	}
}

// TestValidateIsDeterministic: with several bad keys, the same one is
// reported every time (it used to depend on map order).
func TestValidateIsDeterministic(t *testing.T) {
	t.Parallel()
	c := config.Default()
	c.Upstream = "http://127.0.0.1:8080"
	c.ShutdownTimeout, c.HandshakeTimeout, c.ReadHeaderTimeout, c.IdleTimeout, c.ReloadCheckInterval = -1, -1, -1, -1, -1
	for range 50 {
		var ce *config.Error
		if err := c.Validate(); !errors.As(err, &ce) || ce.Key != "shutdown_timeout" {
			t.Fatalf("Validate() = %v, want the shutdown_timeout error first", err)
		}
	}
}

// TestParseH2Upstreams: HTTP/2 upstreams, for the zone and per host, are
// kept as written.
func TestParseH2Upstreams(t *testing.T) {
	t.Parallel()
	in := "upstream: h2c://127.0.0.1:50051\nhosts:\n  - name: grpc.example.com\n    upstream: h2://app:443\n  - name: web.example.com\n    upstream: http://127.0.0.1:8080\n"
	c, err := config.Parse([]byte(in), testFile, testDir)
	if err != nil {
		t.Fatal(err)
	}
	got := []string{c.Upstream, c.Hosts[0].Upstream, c.Hosts[1].Upstream}
	want := []string{"h2c://127.0.0.1:50051", "h2://app:443", "http://127.0.0.1:8080"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("upstreams = %q, want %q", got, want)
	}
}
