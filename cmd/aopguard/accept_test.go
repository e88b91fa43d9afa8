package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/aopguard/aopguard/tlsconfig"
)

// proxyHeader renders a PROXY header with go-proxyproto's writer, as a load
// balancer sends it.
func proxyHeader(t *testing.T, version byte, src string) []byte {
	t.Helper()
	s := net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src))
	d := net.TCPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.200:443"))
	if s.IP.To4() == nil {
		d = net.TCPAddrFromAddrPort(netip.MustParseAddrPort("[2001:db8::200]:443"))
	}
	b, err := proxyproto.HeaderProxyFromAddrs(version, s, d).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// proxiedGet opens a connection, sends pre (a PROXY header) and then one
// HTTP/1.1 request over TLS with the extra headers.
func proxiedGet(t *testing.T, addr string, pre []byte, cfg *tls.Config, extra map[string]string) (*http.Response, error) {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := raw.Write(pre); err != nil {
		return nil, err
	}
	c := tls.Client(raw, cfg)
	req, _ := http.NewRequest("GET", "https://"+cfg.ServerName+"/", nil)
	req.Close = true
	for k, v := range extra {
		req.Header.Set(k, v)
	}
	if err := req.Write(c); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return nil, err
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, nil
}

// TestProxyProtocolBinary: behind a trusted balancer the PROXY header's
// address is the client for source classification, the access log,
// X-Forwarded-For and the Cloudflare headers; a trusted peer without a
// header, and a header from an untrusted peer, are refused, counted and
// logged once per peer per minute; plain HTTP (curl http://) gets a 400.
func TestProxyProtocolBinary(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t)
	p.write(t, "cf-ips.txt", []byte("203.0.113.0/24\n"))
	// One file per instance: each watches its own and reloads when it
	// changes.
	config := func(name, trusted string) string {
		return p.write(t, name, []byte(`
upstream: `+up.URL+`
mode: require
zone_ca: zone-ca.pem
cloudflare_ips: cf-ips.txt
trust_cloudflare_headers: true
require_cloudflare_source: true
certificates:
  - cert: server.pem
    key: server.key
proxy_protocol:
  trusted: [`+trusted+`]
  timeout: 1s
`))
	}
	g := start(t, "--config", config("trusted.yaml", "127.0.0.1"))
	spoofed := start(t, "--config", config("spoofed.yaml", "10.0.0.0/8"))
	client := p.clientTLS("app.example.com", p.zoneLeaf)

	admitted := []struct {
		name, header, src string
		version           byte
		wantXFF           string
		wantCF            bool // CF-Connecting-IP reaches the app
	}{
		{"v2 from a Cloudflare address", "203.0.113.50:41000", "203.0.113.50", 2, "198.51.100.9", true},
		{"v1 from a Cloudflare address", "203.0.113.51:41001", "203.0.113.51", 1, "198.51.100.9", true},
		{"v1 from elsewhere", "192.0.2.1:41002", "192.0.2.1", 1, "192.0.2.1", false},
		{"v2 over IPv6 from elsewhere", "[2001:db8::5]:41003", "2001:db8::5", 2, "2001:db8::5", false},
	}
	for i, tc := range admitted {
		resp, err := proxiedGet(t, g.listen, proxyHeader(t, tc.version, tc.header), client, map[string]string{"CF-Connecting-IP": "198.51.100.9"})
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", tc.name, resp, err)
		}
		up.mu.Lock()
		seen := up.seen[len(up.seen)-1]
		up.mu.Unlock()
		if xff := seen.Get("X-Forwarded-For"); xff != tc.wantXFF {
			t.Errorf("%s: the app saw X-Forwarded-For %q, want %q", tc.name, xff, tc.wantXFF)
		}
		if got := seen.Get("Cf-Connecting-Ip") != ""; got != tc.wantCF {
			t.Errorf("%s: CF-Connecting-IP reached the app: %v, want %v", tc.name, got, tc.wantCF)
		}
		line := g.waitLog("request", i+1)[i]
		if host, _, _ := net.SplitHostPort(line["remote"].(string)); host != tc.src {
			t.Errorf("%s: access log remote %v, want %s", tc.name, line["remote"], tc.src)
		}
		wantSource := map[bool]string{true: "cloudflare", false: "other"}[tc.wantCF]
		if line["source"] != wantSource {
			t.Errorf("%s: access log source %v, want %s", tc.name, line["source"], wantSource)
		}
	}
	// The same over HTTP/2, which another server serves.
	tr := &http.Transport{ForceAttemptHTTP2: true, DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		raw, err := net.Dial("tcp", g.listen)
		if err != nil {
			return nil, err
		}
		raw.Write(proxyHeader(t, 2, "[2001:db8::6]:41004"))
		cfg := client.Clone()
		cfg.NextProtos = []string{"h2"}
		c := tls.Client(raw, cfg)
		return c, c.HandshakeContext(ctx)
	}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://app.example.com/")
	if err != nil || resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("HTTP/2 behind the balancer: %v %v", resp, err)
	}
	resp.Body.Close()
	up.mu.Lock()
	if xff := up.seen[len(up.seen)-1].Get("X-Forwarded-For"); xff != "2001:db8::6" {
		t.Errorf("HTTP/2: the app saw X-Forwarded-For %q, want 2001:db8::6", xff)
	}
	up.mu.Unlock()

	if n := len(g.metrics(`aopguard_client_cert_verifications_total{action="allow",host="_zone",mode="require",reason="",result="success",source="cloudflare"} 2`)); n != 1 {
		t.Errorf("verifications from Cloudflare sources: %v", g.metrics(`aopguard_client_cert_verifications_total{action="allow"`))
	}

	// A trusted peer that sends no header, or too late.
	if _, err := proxiedGet(t, g.listen, nil, client, nil); err == nil {
		t.Error("a trusted peer without a PROXY header was served")
	}
	if v := waitMetric(g, `aopguard_connections_refused_total{reason="proxy_missing"}`, "1"); v != "1" {
		t.Errorf("proxy_missing refusals = %q, want 1", v)
	}
	if v := waitMetric(g, `aopguard_connections_refused_total{reason="proxy_untrusted"}`, "0"); v != "0" {
		t.Errorf("proxy_untrusted refusals = %q, want 0", v)
	}

	// Spoofing: a peer outside trusted claims a Cloudflare address.
	for i := range 3 {
		if _, err := proxiedGet(t, spoofed.listen, proxyHeader(t, byte(1+i%2), "203.0.113.50:1"), client, nil); err == nil {
			t.Fatal("a PROXY header from an untrusted peer was accepted")
		}
	}
	if v := waitMetric(spoofed, `aopguard_connections_refused_total{reason="proxy_untrusted"}`, "3"); v != "3" {
		t.Errorf("proxy_untrusted refusals = %q, want 3", v)
	}
	logged := spoofed.waitLog("connection refused before TLS (logged once a minute per peer and reason)", 1)
	if len(logged) != 1 || logged[0]["peer"] != "127.0.0.1" || logged[0]["reason"] != "proxy_untrusted" || logged[0]["level"] != "warn" {
		t.Errorf("refusal log lines: %v", logged)
	}
	if up.count() != len(admitted)+1 {
		t.Errorf("the app saw %d requests, want %d", up.count(), len(admitted)+1)
	}

	// Plain HTTP to the TLS port, as a user tries it with curl.
	code, out := runCmd(t, exec.Command(tool(t, "curl"), "--silent", "--show-error", "--max-time", "10", "--include", "http://"+spoofed.listen+"/"))
	if code != 0 || !strings.HasPrefix(out, "HTTP/1.1 400 Bad Request") || !strings.Contains(out, "this port speaks HTTPS") {
		t.Errorf("curl http:// to the TLS port: exit %d\n%s", code, out)
	}
	if v := waitMetric(spoofed, `aopguard_connections_refused_total{reason="plain_http"}`, "1"); v != "1" {
		t.Errorf("plain_http refusals = %q, want 1", v)
	}
}

// waitMetric waits (boundedly) for a series to reach want and returns its
// last value: a refused connection is counted just after it is closed.
func waitMetric(g *proc, series, want string) string {
	deadline := time.Now().Add(5 * time.Second)
	for {
		v := g.metric(series)
		if v == want || time.Now().After(deadline) {
			return v
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestIdleConnectionsBinary: with a single handshake slot, a thousand TCP
// connections that never send a ClientHello do not keep a valid client
// from getting 200s.
func TestIdleConnectionsBinary(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t)
	writeConfig(t, p.dir, "upstream: "+up.URL+"\nmode: require\nzone_ca: zone-ca.pem\nmax_handshakes: 1\n"+
		"certificates:\n  - cert: server.pem\n    key: server.key\n")
	g := start(t, "--config", p.path("aopguard.yaml"))
	for i := range 1000 {
		c, err := net.Dial("tcp", g.listen)
		if err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
	}
	for i := range 5 {
		resp, _, err := get(t, g.listen, p.clientTLS("app.example.com", p.zoneLeaf), "app.example.com", "/")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("request %d with 1000 idle connections open: %v %v", i, resp, err)
		}
	}
}

// TestSharedTicketKeysBinary: two instances reading the same key file
// resume each other's sessions, one with other keys does not; a changed
// file is picked up without a restart, and a broken one is refused on
// reload (naming file, key and line) while the running keys stay.
func TestSharedTicketKeysBinary(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t)
	for _, name := range []string{"tickets.keys", "other.keys"} {
		if code, out, errOut := certsRun(t, "", "ticket-keys", "--out", p.path(name)); code != 0 {
			t.Fatalf("certs ticket-keys: %d %s %s", code, out, errOut)
		}
	}
	instance := func(keys string) *proc {
		cfg := fmt.Sprintf("upstream: %s\nmode: require\nzone_ca: %s\nsession_ticket_keys: %s\nreload_check_interval: 1h\n"+
			"certificates:\n  - cert: %s\n    key: %s\nhosts:\n  - name: app.example.com\n",
			up.URL, p.path("zone-ca.pem"), keys, p.path("server.pem"), p.path("server.key"))
		dir := t.TempDir()
		path := dir + "/aopguard.yaml"
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return start(t, "--config", path)
	}
	a, b := instance(p.path("tickets.keys")), instance(p.path("tickets.keys"))
	other := instance(p.path("other.keys"))
	// resumedOn gets a session from one instance and offers it to another.
	resumedOn := func(from, to *proc) bool {
		t.Helper()
		cfg := p.clientTLS("app.example.com", p.zoneLeaf)
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		for i, g := range []*proc{from, to} {
			resp, _, err := get(t, g.listen, cfg, "app.example.com", "/")
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("request to instance: %v %v", resp, err)
			}
			if i == 1 {
				return resp.TLS.DidResume
			}
		}
		return false
	}
	if !resumedOn(a, b) {
		t.Error("a session from one instance did not resume on another with the same key file")
	}
	if resumedOn(a, other) {
		t.Error("a session resumed on an instance with other keys")
	}

	// Rotating the file: both pick it up and keep resuming each other's
	// sessions, now sealed with the new key.
	if code, _, errOut := certsRun(t, "", "ticket-keys", "--out", p.path("tickets.keys"), "--rotate"); code != 0 {
		t.Fatalf("rotate: %s", errOut)
	}
	a.waitLog("reload complete", 1)
	b.waitLog("reload complete", 1)
	if !resumedOn(a, b) || !resumedOn(b, a) {
		t.Error("after rotating the file, sessions no longer resume across instances")
	}

	// A broken file: the reload fails naming it, and the keys stay.
	p.write(t, "tickets.keys", []byte("not a key\n"))
	failed := b.waitLog("reload failed; still serving the previous configuration", 1)
	if e, _ := failed[0]["error"].(string); !strings.Contains(e, "session_ticket_keys") || !strings.Contains(e, "tickets.keys: line 1") {
		t.Errorf("reload error %q does not name key, file and line", e)
	}
	if !resumedOn(a, b) {
		t.Error("a broken key file changed the running keys")
	}

	// At start, a broken file is a configuration error: exit 2.
	cmd := exec.Command(binary, "run", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--config", writeConfig(t, p.dir,
		"upstream: "+up.URL+"\nsession_ticket_keys: tickets.keys\n"))
	if code, out := runCmd(t, cmd); code != 2 || !strings.Contains(out, "session_ticket_keys") || !strings.Contains(out, "line 1") {
		t.Errorf("start with a broken key file: exit %d\n%s", code, out)
	}
}

// TestCertsTicketKeys: the command makes a 0600 file, never overwrites one
// silently, rotates new-first within a bound, and never prints a key.
func TestCertsTicketKeys(t *testing.T) {
	dir := t.TempDir()
	file := dir + "/tickets.keys"
	load := func() [][tlsconfig.TicketKeyBytes]byte {
		t.Helper()
		keys, err := tlsconfig.LoadTicketKeys(file)
		if err != nil {
			t.Fatal(err)
		}
		return keys
	}
	if code, out, errOut := certsRun(t, "", "ticket-keys", "--out", file); code != 0 || !strings.Contains(out, "wrote "+file) {
		t.Fatalf("make: exit %d\n%s%s", code, out, errOut)
	}
	if m := fileMode(t, file); m != 0o600 {
		t.Errorf("mode %o, want 600", m)
	}
	first := load()
	if len(first) != 1 {
		t.Fatalf("%d keys, want 1", len(first))
	}
	if code, _, errOut := certsRun(t, "", "ticket-keys", "--out", file); code != 2 || !strings.Contains(errOut, "already exists: use --rotate") {
		t.Errorf("existing file: exit %d %s", code, errOut)
	}
	if keys := load(); keys[0] != first[0] {
		t.Error("the refused run changed the file")
	}
	history := first
	for i := range 4 {
		code, out, errOut := certsRun(t, "", "ticket-keys", "--out", file, "--rotate", "--keep", "2")
		if code != 0 {
			t.Fatalf("rotate %d: exit %d %s", i, code, errOut)
		}
		keys := load()
		if want := min(len(history)+1, 3); len(keys) != want {
			t.Fatalf("rotate %d: %d keys, want %d", i, len(keys), want)
		}
		for j := 1; j < len(keys); j++ {
			if keys[j] != history[j-1] {
				t.Errorf("rotate %d: key %d is not the previous key %d", i, j, j-1)
			}
		}
		data, _ := os.ReadFile(file)
		for _, l := range strings.Split(string(data), "\n") {
			if l != "" && !strings.HasPrefix(l, "#") && (strings.Contains(out, l) || strings.Contains(errOut, l)) {
				t.Errorf("rotate %d printed a key", i)
			}
		}
		if m := fileMode(t, file); m != 0o600 {
			t.Errorf("rotate %d: mode %o, want 600", i, m)
		}
		history = keys
	}
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"ticket-keys"}, 2, "--out FILE is required"},
		{[]string{"ticket-keys", "--out", file, "--rotate", "--keep", "16"}, 2, "--keep 16 is outside 0..15"},
		{[]string{"ticket-keys", "--out", dir + "/missing.keys", "--rotate"}, 1, "does not exist: make it first"},
	} {
		if code, _, errOut := certsRun(t, "", tc.args...); code != tc.code || !strings.Contains(errOut, tc.msg) {
			t.Errorf("%v: exit %d %q, want %d %q", tc.args, code, errOut, tc.code, tc.msg)
		}
	}
	os.WriteFile(file, []byte("garbage\n"), 0o600)
	if code, _, errOut := certsRun(t, "", "ticket-keys", "--out", file, "--rotate"); code != 1 || !strings.Contains(errOut, file+": line 1") {
		t.Errorf("rotating a broken file: exit %d %q", code, errOut)
	}
}
