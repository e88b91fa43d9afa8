package check

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aopguard/aopguard/internal/testpki"
)

// world is the test PKI: the origin's server certificate, a zone CA, a
// per-hostname CA and the client certificate it issued (the one
// "uploaded to Cloudflare"), and a second host's CA.
type world struct {
	serverCA, zoneCA, hostCA, otherCA *testpki.Cert
	server, hostLeaf                  *testpki.Cert
}

func newWorld(t *testing.T) *world {
	w := &world{
		serverCA: testpki.CA(t, "origin server CA"),
		zoneCA:   testpki.CA(t, "zone CA"),
		hostCA:   testpki.CA(t, "app CA"),
		otherCA:  testpki.CA(t, "other CA"),
	}
	w.server = testpki.Server(t, w.serverCA, "app.example.com", "other.example.com", "127.0.0.1")
	w.hostLeaf = testpki.Client(t, w.hostCA, "app.example.com")
	return w
}

// fakeOrigin is an origin server with a client-certificate policy per SNI.
type fakeOrigin struct {
	// cas: the CAs required for an SNI; "" is the default (no SNI, unknown
	// names). A nil pool asks for no certificate.
	cas map[string]*x509.CertPool
	// nginx: complete every handshake and answer 400 for a missing or bad
	// certificate, as nginx's ssl_verify_client on does; otherwise refuse
	// at the handshake as aopguard does.
	nginx bool
	// recheck answers 421 when the Host selects a policy the connection's
	// certificate does not satisfy.
	recheck    bool
	maxVersion uint16
	status     int // the app's answer; default 200
}

func (o fakeOrigin) pool(name string) *x509.CertPool {
	if p, ok := o.cas[name]; ok {
		return p
	}
	return o.cas[""]
}

func verifies(chain []*x509.Certificate, pool *x509.CertPool) bool {
	if pool == nil {
		return true
	}
	if len(chain) == 0 {
		return false
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err == nil
}

// start serves the origin on 127.0.0.1 and returns its address.
func (o fakeOrigin) start(t *testing.T, w *world) string {
	t.Helper()
	cert := w.server.TLS()
	base := &tls.Config{
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			c := &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: o.maxVersion, NextProtos: []string{"http/1.1"}}
			if pool := o.pool(hello.ServerName); pool != nil {
				c.ClientCAs = pool
				c.ClientAuth = tls.RequireAndVerifyClientCert
				if o.nginx {
					c.ClientAuth = tls.RequestClientCert
				}
			}
			return c, nil
		},
	}
	h := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		peer := r.TLS.PeerCertificates
		if o.nginx {
			pool := o.pool(r.TLS.ServerName)
			switch {
			case pool != nil && len(peer) == 0:
				rw.WriteHeader(400)
				io.WriteString(rw, "<html>\r\n<head><title>400 No required SSL certificate was sent</title></head>\r\n</html>\r\n")
				return
			case !verifies(peer, pool):
				rw.WriteHeader(400)
				io.WriteString(rw, "<html>\r\n<head><title>400 The SSL certificate error</title></head>\r\n</html>\r\n")
				return
			}
		}
		if o.recheck && host != r.TLS.ServerName && !verifies(peer, o.pool(host)) {
			rw.WriteHeader(http.StatusMisdirectedRequest)
			return
		}
		if o.status != 0 {
			rw.WriteHeader(o.status)
		}
		fmt.Fprintf(rw, "hello from %s\n", host)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, TLSConfig: base, ErrorLog: quietLog()}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// summary renders a report compactly: "1P:certificate_required 2F:200 ...".
func summarize(r *Report) string {
	var parts []string
	for _, p := range r.Probes {
		v := "P"
		if !p.Pass {
			v = "F"
		}
		what := p.Alert
		switch p.Outcome {
		case HTTP:
			what = fmt.Sprint(p.Status)
		case TLSRefused:
			if what == "" {
				what = "closed"
			}
		case Error:
			what = "error"
		}
		parts = append(parts, fmt.Sprintf("%d%s:%s", p.Number, v, what))
	}
	return strings.Join(parts, " ")
}

func TestRunAgainstOrigins(t *testing.T) {
	w := newWorld(t)
	zoneAndHost := map[string]*x509.CertPool{"": testpki.Pool(w.zoneCA), "app.example.com": testpki.Pool(w.hostCA)}
	twoHosts := map[string]*x509.CertPool{"": testpki.Pool(w.zoneCA), "app.example.com": testpki.Pool(w.hostCA), "other.example.com": testpki.Pool(w.otherCA)}
	cases := []struct {
		name     string
		origin   fakeOrigin
		hosts    []string
		expect   Expect
		noClient bool
		want     string
		pass     bool
		notes    map[int]string // probe number -> substring of its note
	}{
		{
			name:   "refuses at the handshake (TLS 1.3), Host re-checked: require",
			origin: fakeOrigin{cas: zoneAndHost, recheck: true},
			expect: ExpectRequire,
			want:   "1P:certificate_required 2P:certificate_required 3P:unknown_ca 4P:421 5P:200",
			pass:   true,
		},
		{
			name:   "same origin judged as log-only",
			origin: fakeOrigin{cas: zoneAndHost, recheck: true},
			expect: ExpectLogOnly,
			want:   "1F:certificate_required 2F:certificate_required 3F:unknown_ca 4P:421 5P:200",
			notes:  map[int]string{1: "nothing should be refused yet"},
		},
		{
			name:   "TLS 1.2 alerts",
			origin: fakeOrigin{cas: zoneAndHost, recheck: true, maxVersion: tls.VersionTLS12},
			expect: ExpectRequire,
			want:   "1P:handshake_failure 2P:handshake_failure 3P:unknown_ca 4P:421 5P:200",
			pass:   true,
		},
		{
			name:   "nginx-style 400 answers count as refused",
			origin: fakeOrigin{cas: zoneAndHost, recheck: true, nginx: true},
			expect: ExpectRequire,
			want:   "1P:400 2P:400 3P:400 4P:421 5P:200",
			pass:   true,
			notes:  map[int]string{2: "about the certificate counts as refused"},
		},
		{
			name:   "SNI-only origin: a Host header reaches a host that refuses the certificate",
			origin: fakeOrigin{cas: zoneAndHost},
			expect: ExpectRequire,
			want:   "1P:certificate_required 2P:certificate_required 3P:unknown_ca 4F:200 5P:200",
			notes:  map[int]string{4: "a Host header bypasses its client-certificate check"},
		},
		{
			name:   "open origin: require fails",
			origin: fakeOrigin{},
			expect: ExpectRequire,
			want:   "1F:200 2F:200 3F:200 4P:200 5P:200",
			notes:  map[int]string{1: "not enforced", 4: "accepts this certificate on a connection of its own"},
		},
		{
			name:   "open origin: log-only passes",
			origin: fakeOrigin{},
			expect: ExpectLogOnly,
			want:   "1P:200 2P:200 3P:200 4P:200 5P:200",
			pass:   true,
		},
		{
			name:   "open origin whose app answers 404: a 4xx the client certificate gets too is no refusal",
			origin: fakeOrigin{status: 404},
			expect: ExpectRequire,
			want:   "1P:404 2F:404 3F:404 4P:404 5P:404",
			notes:  map[int]string{2: "the same answer as with the client certificate"},
		},
		{
			name:     "no client certificate: probe 5 skipped, probe 4 goes without",
			origin:   fakeOrigin{cas: zoneAndHost, recheck: true},
			expect:   ExpectRequire,
			noClient: true,
			want:     "1P:certificate_required 2P:certificate_required 3P:unknown_ca 4P:certificate_required",
			pass:     true,
		},
		{
			name:   "two hosts with their own CAs, one client certificate",
			origin: fakeOrigin{cas: twoHosts, recheck: true},
			hosts:  []string{"app.example.com", "other.example.com"},
			expect: ExpectRequire,
			want: "1P:certificate_required 2P:certificate_required 3P:unknown_ca 4P:421 5P:200 " +
				"2P:certificate_required 3P:unknown_ca 4P:unknown_ca 5F:unknown_ca",
			notes: map[int]string{5: "Cloudflare would be locked out"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr := tc.origin.start(t, w)
			hosts := tc.hosts
			if hosts == nil {
				hosts = []string{"app.example.com"}
			}
			o := Options{Origin: addr, Hosts: hosts, RootCAs: testpki.Pool(w.serverCA), CAFile: "server-ca.pem", Expect: tc.expect,
				ClientCertFile: "client.pem", ClientKeyFile: "client.key"}
			if !tc.noClient {
				c := w.hostLeaf.TLS()
				o.Client = &c
			}
			rep, err := Run(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			var text bytes.Buffer
			rep.WriteText(&text)
			if got := summarize(rep); got != tc.want || rep.Pass != tc.pass {
				t.Fatalf("got  %s (pass %v)\nwant %s (pass %v)\n%s", got, rep.Pass, tc.want, tc.pass, text.String())
			}
			for n, want := range tc.notes {
				found := false
				for _, p := range rep.Probes {
					found = found || p.Number == n && strings.Contains(p.Note, want)
				}
				if !found {
					t.Errorf("no probe %d with a note containing %q:\n%s", n, want, text.String())
				}
			}
			verdict := "PASS: all"
			if !tc.pass {
				verdict = "FAIL: "
			}
			if !strings.Contains(text.String(), verdict) {
				t.Errorf("text report lacks %q:\n%s", verdict, text.String())
			}
		})
	}
}

func TestReportTextAndJSON(t *testing.T) {
	w := newWorld(t)
	addr := fakeOrigin{cas: map[string]*x509.CertPool{"": testpki.Pool(w.zoneCA), "app.example.com": testpki.Pool(w.hostCA)}, recheck: true}.start(t, w)
	_, port, _ := net.SplitHostPort(addr)
	c := w.hostLeaf.TLS()
	rep, err := Run(context.Background(), Options{Origin: addr, Hosts: []string{"app.example.com"}, RootCAs: testpki.Pool(w.serverCA),
		CAFile: "/etc/ssl/origin ca.pem", Client: &c, ClientCertFile: "cf.pem", ClientKeyFile: "cf.key"})
	if err != nil {
		t.Fatal(err)
	}
	wantCurl := map[string]string{
		DirectIP:      "curl -i -k https://127.0.0.1:" + port + "/",
		NoCert:        "curl -i --cacert '/etc/ssl/origin ca.pem' --resolve app.example.com:" + port + ":127.0.0.1 https://app.example.com:" + port + "/",
		UntrustedCert: untrustedCertCmd + "curl -i --cacert '/etc/ssl/origin ca.pem' --resolve app.example.com:" + port + ":127.0.0.1 --cert untrusted.pem --key untrusted.key https://app.example.com:" + port + "/",
		HostSwitch:    "curl -i --cacert '/etc/ssl/origin ca.pem' --resolve app.example.com:" + port + ":127.0.0.1 -H 'Host: aopguard-check-probe.example.com' --cert cf.pem --key cf.key https://app.example.com:" + port + "/",
		ClientCert:    "curl -i --cacert '/etc/ssl/origin ca.pem' --resolve app.example.com:" + port + ":127.0.0.1 --cert cf.pem --key cf.key https://app.example.com:" + port + "/",
	}
	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Origin string           `json:"origin"`
		Expect string           `json:"expect"`
		Pass   *bool            `json:"pass"`
		Probes []map[string]any `json:"probes"`
		Notes  []string         `json:"notes"`
	}
	if err := json.Unmarshal(js.Bytes(), &doc); err != nil {
		t.Fatalf("JSON report does not parse: %v\n%s", err, js.String())
	}
	if doc.Origin != addr || doc.Expect != "require" || doc.Pass == nil || !*doc.Pass || len(doc.Probes) != 5 {
		t.Fatalf("report header: %+v\n%s", doc, js.String())
	}
	for _, p := range doc.Probes {
		name, _ := p["name"].(string)
		for _, field := range []string{"number", "name", "host", "sni", "host_header", "cert", "curl", "outcome", "alert", "status", "detail", "expected", "pass", "note"} {
			if _, ok := p[field]; !ok {
				t.Errorf("probe %s lacks %q", name, field)
			}
		}
		if p["curl"] != wantCurl[name] {
			t.Errorf("probe %s curl:\n%v\nwant:\n%s", name, p["curl"], wantCurl[name])
		}
	}
	if doc.Probes[0]["alert"] != "certificate_required" || doc.Probes[3]["status"] != float64(421) {
		t.Errorf("alert/status fields: %v / %v", doc.Probes[0]["alert"], doc.Probes[3]["status"])
	}

	var text bytes.Buffer
	rep.WriteText(&text)
	for _, want := range []string{
		"aopguard check: origin " + addr + ", expecting require",
		"#  PROBE",
		"1  direct-ip       (none)",
		"TLS refused (certificate_required)",
		"refused (TLS alert, or HTTP 4xx)",
		"  curl: " + wantCurl[ClientCert],
		"only one --host: the host-switch probe asks for aopguard-check-probe.example.com",
		"an HTTP 4xx answer counts as refused",
		"PASS: all 5 probes met the expectation (require).",
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
}

func TestServerCertificateVerification(t *testing.T) {
	w := newWorld(t)
	addr := fakeOrigin{}.start(t, w)
	stranger := testpki.CA(t, "not the origin's CA")
	cases := []struct {
		name     string
		roots    *x509.CertPool
		insecure bool
		want     string
	}{
		{"right CA", testpki.Pool(w.serverCA), false, "1P:200 2P:200 3P:200 4P:200"},
		{"wrong CA: every SNI probe is an error, probe 1 never verifies", testpki.Pool(stranger), false, "1P:200 2F:error 3F:error 4F:error"},
		{"insecure", testpki.Pool(stranger), true, "1P:200 2P:200 3P:200 4P:200"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := Run(context.Background(), Options{Origin: addr, Hosts: []string{"app.example.com"}, RootCAs: tc.roots, Insecure: tc.insecure, Expect: ExpectLogOnly})
			if err != nil {
				t.Fatal(err)
			}
			if got := summarize(rep); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
			if strings.Contains(tc.want, "error") && !strings.Contains(rep.Probes[1].Detail, "pass --ca with the CA that issued it, or --insecure") {
				t.Errorf("detail %q does not say what to do", rep.Probes[1].Detail)
			}
		})
	}
}

func TestUnreachableAndSilentOrigins(t *testing.T) {
	// A port nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	// A server that accepts and never says a word.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	for _, tc := range []struct{ name, addr, detail string }{
		{"closed port", closed, "connecting to " + closed},
		{"silent server", silent.Addr().String(), "TLS handshake: timed out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := Run(context.Background(), Options{Origin: tc.addr, Hosts: []string{"app.example.com"}, Insecure: true, Timeout: 300 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Pass || summarize(rep) != "1F:error 2F:error 3F:error 4F:error" {
				t.Fatalf("got %s (pass %v)", summarize(rep), rep.Pass)
			}
			if !strings.Contains(rep.Probes[0].Detail, tc.detail) || !strings.Contains(rep.Probes[0].Note, "could not be judged") {
				t.Errorf("detail %q note %q, want %q", rep.Probes[0].Detail, rep.Probes[0].Note, tc.detail)
			}
		})
	}
}

func TestCurlRendering(t *testing.T) {
	cases := []struct {
		name string
		o    Options
		at   attempt
		want string
	}{
		{"port 443 left out, insecure", Options{Origin: "203.0.113.7:443", Insecure: true}, attempt{sni: "app.example.com", host: "app.example.com", cert: "none"},
			"curl -i -k --resolve app.example.com:443:203.0.113.7 https://app.example.com/"},
		{"direct to IPv6", Options{Origin: "[2001:db8::7]:443"}, attempt{host: "[2001:db8::7]", cert: "none"},
			"curl -i -k 'https://[2001:db8::7]/'"},
		{"SNI to IPv6", Options{Origin: "[2001:db8::7]:8443", CAFile: "ca.pem"}, attempt{sni: "app.example.com", host: "app.example.com", cert: "none"},
			"curl -i --cacert ca.pem --resolve 'app.example.com:8443:[2001:db8::7]' https://app.example.com:8443/"},
		{"origin by name: --connect-to", Options{Origin: "origin.internal:443"}, attempt{sni: "app.example.com", host: "app.example.com", cert: "none"},
			"curl -i --connect-to app.example.com:443:origin.internal:443 https://app.example.com/"},
		{"path with a query, paths with spaces", Options{Origin: "203.0.113.7:443", Path: "/health?x=1&y=2", ClientCertFile: "my cert.pem", ClientKeyFile: "my key.pem"},
			attempt{sni: "app.example.com", host: "other.example.com", cert: "client"},
			"curl -i --resolve app.example.com:443:203.0.113.7 -H 'Host: other.example.com' --cert 'my cert.pem' --key 'my key.pem' 'https://app.example.com/health?x=1&y=2'"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.o.Path == "" {
				tc.o.Path = "/"
			}
			origin, err := NormalizeOrigin(tc.o.Origin)
			if err != nil {
				t.Fatal(err)
			}
			r := &runner{o: tc.o, origin: origin}
			if got := r.curl(tc.at); got != tc.want {
				t.Errorf("curl:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
	if got := shellQuote("it's"); got != `'it'\''s'` {
		t.Errorf("shellQuote = %s", got)
	}
}

func TestNormalizeOrigin(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"203.0.113.7:443", "203.0.113.7:443", ""},
		{"203.0.113.7", "203.0.113.7:443", ""},
		{"origin.example.com", "origin.example.com:443", ""},
		{"2001:db8::7", "[2001:db8::7]:443", ""},
		{"[2001:db8::7]", "[2001:db8::7]:443", ""},
		{"[2001:db8::7]:8443", "[2001:db8::7]:8443", ""},
		{"", "", "required"},
		{"https://203.0.113.7/", "", "not a URL"},
		{"203.0.113.7:0", "", "bad port"},
		{"203.0.113.7:https", "", "bad port"},
		{":443", "", "no host"},
	} {
		got, err := NormalizeOrigin(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("NormalizeOrigin(%q) = %q, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("NormalizeOrigin(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestAlertName(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
		ok   bool
	}{
		{&net.OpError{Op: "remote error", Err: tls.AlertError(116)}, "certificate_required", true},
		{fmt.Errorf("reading: %w", &net.OpError{Op: "remote error", Err: tls.AlertError(42)}), "bad_certificate", true},
		{&net.OpError{Op: "remote error", Err: tls.AlertError(48)}, "unknown_ca", true},
		{&net.OpError{Op: "remote error", Err: tls.AlertError(40)}, "handshake_failure", true},
		{&net.OpError{Op: "remote error", Err: tls.AlertError(250)}, "alert_250", true},
		{&net.OpError{Op: "remote error", Err: errors.New("tls: unknown certificate authority")}, "unknown_ca", true},
		{&net.OpError{Op: "read", Err: io.EOF}, "", false},
		{errors.New("remote error: tls: certificate required"), "", false},
	} {
		got, ok := AlertName(tc.err)
		if got != tc.want || ok != tc.ok {
			t.Errorf("AlertName(%v) = %q, %v; want %q, %v", tc.err, got, ok, tc.want, tc.ok)
		}
	}
}

func TestOptionErrors(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{Origin: "127.0.0.1:1"}, "at least one host"},
		{Options{Origin: "127.0.0.1:1", Hosts: []string{"a.example.com"}, Expect: "enforce"}, `"enforce" is not one of require, log-only`},
		{Options{Origin: "127.0.0.1:1", Hosts: []string{"a.example.com"}, Path: "health"}, "must start with /"},
		{Options{Hosts: []string{"a.example.com"}}, "origin address is required"},
	} {
		if _, err := Run(context.Background(), tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Run(%+v) = %v, want %q", tc.o, err, tc.want)
		}
	}
}

// quietLog keeps the origins' handshake errors (the point of the tests)
// out of the test output.
func quietLog() *log.Logger { return log.New(io.Discard, "", 0) }

// TestRunWithMLDSAClient probes with a post-quantum client certificate: it
// gets in over TLS 1.3; an origin that negotiates TLS 1.2 fails probes 4
// and 5 with the reason, rather than crypto/tls silently sending no
// certificate.
func TestRunWithMLDSAClient(t *testing.T) {
	w := newWorld(t)
	pqCA := testpki.MLDSACA(t, "app ML-DSA CA", 65)
	leaf := testpki.MLDSAClient(t, pqCA, "app.example.com", 65).TLS()
	cas := map[string]*x509.CertPool{"": testpki.Pool(w.zoneCA), "app.example.com": testpki.Pool(pqCA)}
	cases := []struct {
		name       string
		maxVersion uint16
		want       string
		pass       bool
	}{
		{"TLS 1.3 origin", 0, "1P:certificate_required 2P:certificate_required 3P:unknown_ca 4P:421 5P:200", true},
		{"TLS 1.2 origin", tls.VersionTLS12, "1P:handshake_failure 2P:handshake_failure 3P:unknown_ca 4F:error 5F:error", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := fakeOrigin{cas: cas, recheck: true, maxVersion: tc.maxVersion}.start(t, w)
			rep, err := Run(context.Background(), Options{Origin: addr, Hosts: []string{"app.example.com"}, RootCAs: testpki.Pool(w.serverCA),
				Client: &leaf, ClientCertFile: "client.pem", ClientKeyFile: "client.key"})
			if err != nil {
				t.Fatal(err)
			}
			var text bytes.Buffer
			rep.WriteText(&text)
			if got := summarize(rep); got != tc.want || rep.Pass != tc.pass {
				t.Fatalf("got  %s (pass %v)\nwant %s (pass %v)\n%s", got, rep.Pass, tc.want, tc.pass, text.String())
			}
			if !strings.Contains(text.String(), "cannot present it") {
				t.Errorf("no note about curl and OpenSSL 3.0:\n%s", text.String())
			}
			if tc.maxVersion == tls.VersionTLS12 && !strings.Contains(rep.Probes[len(rep.Probes)-1].Detail, "can only be presented over TLS 1.3") {
				t.Errorf("probe 5 detail %q does not give the reason", rep.Probes[len(rep.Probes)-1].Detail)
			}
		})
	}
}
