package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
)

// freePort returns a loopback port that was free a moment ago, for servers
// that must be told their port before they bind it (Pebble, Prometheus). It
// picks below the kernel's ephemeral range (32768 and up on Linux), so the
// port cannot be handed meanwhile to an outgoing connection, which is what
// made a port from 127.0.0.1:0 turn up "already in use" on a busy machine.
func freePort(t *testing.T) int {
	t.Helper()
	for range 100 {
		port := 20000 + rand.IntN(12000)
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		ln.Close()
		return port
	}
	t.Fatal("no free loopback port in 20000-31999 after 100 tries")
	return 0
}

// loopbackDNS answers every A query with 127.0.0.1 and everything else
// with an empty answer, so Pebble's validator reaches aopguard for any name.
func loopbackDNS(t *testing.T) string {
	t.Helper()
	// Go's resolver may ask over TCP as well: serve both on one port, so
	// look for a port free for both.
	var pc net.PacketConn
	var ln net.Listener
	for range 100 {
		addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
		var err error
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			continue
		}
		if ln, err = net.Listen("tcp", addr); err != nil {
			pc.Close()
			continue
		}
		break
	}
	if ln == nil {
		t.Fatal("no loopback port free for both UDP and TCP after 100 tries")
	}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		for _, q := range r.Question {
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1}, A: net.ParseIP("127.0.0.1")})
			}
		}
		w.WriteMsg(m)
	})
	udp := &dns.Server{PacketConn: pc, Handler: handler}
	tcp := &dns.Server{Listener: ln, Handler: handler}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	t.Cleanup(func() { udp.Shutdown(); tcp.Shutdown() })
	return pc.LocalAddr().String()
}

// pebbleCA is Pebble, Let's Encrypt's ACME test server, running in the
// test process; it validates challenges against ports on 127.0.0.1.
type pebbleCA struct {
	url    string // ACME directory
	tlsPEM []byte // to trust Pebble's own HTTPS
	ca     *ca.CAImpl
}

func startPebble(t *testing.T, httpPort, tlsPort int, validity time.Duration) *pebbleCA {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")      // validate at once, not after a random pause
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0") // no deliberately rejected nonces
	logger := log.New(io.Discard, "", 0)
	if testing.Verbose() {
		logger = log.New(&testLogWriter{t}, "pebble ", 0)
	}
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{
		"default": {Description: "test", ValidityPeriod: uint64(validity.Seconds())},
	})
	validator := va.New(logger, httpPort, tlsPort, false, loopbackDNS(t), store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	srv := httptest.NewTLSServer(front.Handler())
	t.Cleanup(srv.Close)
	return &pebbleCA{
		url:    srv.URL + wfe.DirectoryPath,
		tlsPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}),
		ca:     authority,
	}
}

// roots trusts the certificates Pebble issues.
func (p *pebbleCA) roots() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca.GetRootCert(0).Cert)
	return pool
}

type testLogWriter struct{ t *testing.T }

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestACME obtains server certificates from Pebble with http-01 and with
// tls-alpn-01 — the latter on a host that requires client certificates,
// which the validator does not have — and, for tls-alpn-01, renews a
// short-lived certificate while requests keep flowing.
func TestACME(t *testing.T) {
	for _, tc := range []struct {
		challenge string
		validity  time.Duration
		renew     bool
	}{
		{"http-01", time.Hour, false},
		{"tls-alpn-01", 24 * time.Second, true},
	} {
		t.Run(tc.challenge, func(t *testing.T) {
			p := newPKI(t)
			up := newUpstream(t)
			httpPort, tlsPort := freePort(t), freePort(t)
			pebble := startPebble(t, httpPort, tlsPort, tc.validity)
			p.write(t, "pebble-tls.pem", pebble.tlsPEM)
			httpListen := ""
			if tc.challenge == "http-01" {
				httpListen = "\n  http_listen: 127.0.0.1:" + strconv.Itoa(httpPort)
			}
			writeConfig(t, p.dir, `
upstream: `+up.URL+`
mode: require
zone_ca: zone-ca.pem
hosts:
  - name: app.example.com
acme:
  email: ops@example.com
  ca: `+pebble.url+`
  ca_root: pebble-tls.pem
  names: [app.example.com]
  challenge: `+tc.challenge+httpListen+`
  storage: acme-storage
  check_interval: 1s
`)
			g := launch(t, "--config", p.path("aopguard.yaml"), "--listen", "127.0.0.1:"+strconv.Itoa(tlsPort))
			g.waitLog("aopguard serving", 1)
			l := g.find("aopguard serving")
			g.listen, g.admin = l["listen"].(string), l["admin"].(string)

			client := p.clientTLS("app.example.com", p.zoneLeaf)
			client.RootCAs = pebble.roots()
			serial := func() (string, error) {
				c, err := tls.Dial("tcp", g.listen, client)
				if err != nil {
					return "", err
				}
				defer c.Close()
				return c.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
			}
			var first string
			deadline := time.Now().Add(30 * time.Second)
			for {
				s, err := serial()
				if err == nil {
					first = s
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no certificate from Pebble: %v\n%s", err, g.output())
				}
				time.Sleep(200 * time.Millisecond)
			}
			resp, _, err := get(t, g.listen, client, "app.example.com", "/")
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("request with the ACME certificate: %v %v", resp, err)
			}
			if code, body := adminGet(t, g.admin, "/readyz"); code != 200 {
				t.Errorf("/readyz with the ACME certificate in hand: %d %q", code, body)
			}
			if tc.challenge == "tls-alpn-01" && g.find("served an ACME tls-alpn-01 challenge") == nil {
				t.Error("no tls-alpn-01 validation logged")
			}
			if tc.challenge == "http-01" {
				noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
				resp, err := noRedirect.Get("http://127.0.0.1:" + strconv.Itoa(httpPort) + "/some/path?q=1")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if want := "https://127.0.0.1:" + strconv.Itoa(tlsPort) + "/some/path?q=1"; resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != want {
					t.Errorf("plain HTTP: %d to %q, want 301 to %q", resp.StatusCode, resp.Header.Get("Location"), want)
				}
			}
			if !tc.renew {
				return
			}

			// Requests keep flowing on new connections while the
			// certificate nears its end and certmagic renews it.
			var failures []error
			var mu sync.Mutex
			var ok atomic.Int64
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					select {
					case <-stop:
						return
					default:
					}
					resp, _, err := get(t, g.listen, client, "app.example.com", "/")
					if err == nil && resp.StatusCode != 200 {
						err = io.ErrUnexpectedEOF
					}
					if err != nil {
						mu.Lock()
						failures = append(failures, err)
						mu.Unlock()
					} else {
						ok.Add(1)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
			renewed := ""
			deadline = time.Now().Add(tc.validity + 10*time.Second)
			for renewed == "" && time.Now().Before(deadline) {
				if s, err := serial(); err == nil && s != first {
					renewed = s
				}
				time.Sleep(250 * time.Millisecond)
			}
			time.Sleep(500 * time.Millisecond)
			close(stop)
			<-done
			if renewed == "" {
				t.Fatalf("certificate %s was not renewed within its lifetime\n%s", first, g.output())
			}
			if len(failures) > 0 {
				t.Errorf("%d of %d requests failed during renewal, first: %v", len(failures), int(ok.Load())+len(failures), failures[0])
			}
		})
	}
}
