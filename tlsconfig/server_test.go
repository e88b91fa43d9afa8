package tlsconfig

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestHandshakes runs real handshakes for every mode, client certificate and
// TLS version, with and without a server name.
func TestHandshakes(t *testing.T) {
	t.Parallel()
	f := getFixture(t)
	clients := []struct {
		name   string
		cert   *tls.Certificate
		result Result // under log-only and require
		reason string
	}{
		{"valid", tlsCert(f.zoneLeaf), Success, ""},
		{"none", nil, None, ReasonMissing},
		{"untrusted CA", tlsCert(f.untrusted), Failed, ReasonUntrusted},
		{"expired", tlsCert(f.expired), Failed, ReasonExpired},
		{"wrong usage", tlsCert(f.wrongUsage), Failed, ReasonWrongUsage},
	}
	for _, mode := range []Mode{Off, LogOnly, Require} {
		for _, ver := range versions {
			for _, sni := range []string{"", "unknown.example.com"} {
				for _, cl := range clients {
					name := mode.String() + "/" + ver.name + "/sni=" + sni + "/" + cl.name
					t.Run(name, func(t *testing.T) {
						t.Parallel()
						rec := &counterRec{}
						// A host policy that the client must not land in.
						set := mustSet(t, PolicySpec{Mode: mode, CAs: caList(f.zoneCA)},
							[]PolicySpec{{Name: "h.example.com", Mode: Require, CAs: caList(f.hostCA)}},
							mustTickets(t), rec)
						h := newHarness(t, set, ServerOptions{})

						res := h.dial(clientConfig(t, ver.v, sni, cl.cert))
						obs := h.next()

						wantResult, wantReason := cl.result, cl.reason
						if mode == Off {
							wantResult, wantReason = None, ""
						}
						refused := mode == Require && wantResult != Success

						if obs.info.Policy != set.Zone() || obs.info.SNI != sni {
							t.Errorf("Observe: policy %v, SNI %q; want zone, %q", policyName(obs.info.Policy), obs.info.SNI, sni)
						}
						if obs.remote == nil || obs.remote.String() == h.ln.Addr().String() {
							t.Errorf("Observe: remote address %v", obs.remote)
						}
						if refused {
							checkRefused(t, res, obs, set.Zone(), ver.v, wantReason)
							h.noneAccepted()
						} else {
							if err := res.err(); err != nil {
								t.Fatalf("client: %v", err)
							}
							if obs.err != nil {
								t.Fatalf("Observe error: %v", obs.err)
							}
							info := h.nextAccepted()
							if info.Policy != set.Zone() || info.SNI != sni || info.Resumed || info.Version != ver.v {
								t.Errorf("Info: policy %s, SNI %q, resumed %v, version %x; want zone, %q, false, %x",
									policyName(info.Policy), info.SNI, info.Resumed, info.Version, sni, ver.v)
							}
							if info.Verdict.Result != wantResult || info.Verdict.Reason != wantReason {
								t.Errorf("Info verdict %s/%q, want %s/%q", info.Verdict.Result, info.Verdict.Reason, wantResult, wantReason)
							}
							if res.state.Version != ver.v {
								t.Errorf("client negotiated %x", res.state.Version)
							}
							// Peer holds the presented chain only when the policy asked for one.
							wantPeer := mode != Off && cl.cert != nil
							if (len(info.Peer) > 0) != wantPeer || (wantPeer && info.Verdict.Fingerprint == "") {
								t.Errorf("Info.Peer has %d certs, fingerprint %q", len(info.Peer), info.Verdict.Fingerprint)
							}
						}

						// Exactly one count, on the right label set.
						action := set.Zone().ActionFor(Verdict{Result: wantResult})
						want := labels(ZoneName, mode.String(), wantResult.String(), action.String())
						counts := rec.counts()
						if len(counts) != 1 || counts[want] != 1 {
							t.Errorf("counters %v, want %s = 1", counts, want)
						}
					})
				}
			}
		}
	}
}

func policyName(p *Policy) string {
	if p == nil {
		return "<nil>"
	}
	return p.Name()
}

// checkRefused checks a handshake that policy p refused with reason.
func checkRefused(t *testing.T, res dialResult, obs observed, p *Policy, version uint16, reason string) {
	t.Helper()
	var rej *RejectError
	if !errors.As(obs.err, &rej) {
		t.Fatalf("Observe error %v (%T), want *RejectError", obs.err, obs.err)
	}
	if rej.Policy != p || rej.Verdict.Reason != reason {
		t.Errorf("RejectError policy %s reason %q, want %s %q", policyName(rej.Policy), rej.Verdict.Reason, p.Name(), reason)
	}
	if obs.info.Verdict != rej.Verdict {
		t.Errorf("Observe info verdict %+v, RejectError verdict %+v", obs.info.Verdict, rej.Verdict)
	}
	if !strings.Contains(rej.Error(), reason) {
		t.Errorf("RejectError text %q does not give the reason", rej.Error())
	}
	err := res.err()
	if err == nil {
		t.Fatal("client saw no error")
	}
	// crypto/tls answers a missing certificate itself: certificate_required
	// under TLS 1.3, handshake_failure under TLS 1.2. A certificate our
	// VerifyConnection refuses gets bad_certificate.
	alert := "bad certificate"
	missing := reason == ReasonMissing || reason == ReasonNeedsTLS13
	switch {
	case missing && version == tls.VersionTLS13:
		alert = "certificate required"
	case missing:
		alert = "handshake failure"
	}
	if !strings.Contains(err.Error(), alert) {
		t.Errorf("client error %q, want alert %q", err, alert)
	}
}

func TestHostPrecedence(t *testing.T) {
	t.Parallel()
	f := getFixture(t)
	set := mustSet(t, PolicySpec{Mode: Require, CAs: caList(f.zoneCA)}, []PolicySpec{
		{Name: "h.example.com", Mode: Require, CAs: caList(f.hostCA)},
		{Name: "*.w.example.com", Mode: Require, CAs: caList(f.hostCA)},
	}, mustTickets(t), nil)
	host, wild := set.Match("h.example.com"), set.Match("x.w.example.com")
	tests := []struct {
		name   string
		sni    string
		cert   *tls.Certificate
		policy *Policy
		ok     bool
		reason string // when refused
	}{
		// A zone leaf on a host with its own CA is what Cloudflare sends
		// before per-hostname AOP takes effect: named as such.
		{"zone leaf to host", "h.example.com", tlsCert(f.zoneLeaf), host, false, ReasonZoneCertOnHost},
		{"zone leaf without SNI", "", tlsCert(f.zoneLeaf), set.Zone(), true, ""},
		{"zone leaf to unknown name", "unknown.example.com", tlsCert(f.zoneLeaf), set.Zone(), true, ""},
		{"host leaf to host", "h.example.com", tlsCert(f.hostLeaf), host, true, ""},
		{"host leaf without SNI", "", tlsCert(f.hostLeaf), set.Zone(), false, ReasonUntrusted},
		{"host leaf to wildcard", "x.w.example.com", tlsCert(f.hostLeaf), wild, true, ""},
		{"zone leaf to wildcard", "x.w.example.com", tlsCert(f.zoneLeaf), wild, false, ReasonZoneCertOnHost},
	}
	for _, ver := range versions {
		for _, tt := range tests {
			t.Run(ver.name+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				h := newHarness(t, set, ServerOptions{})
				res := h.dial(clientConfig(t, ver.v, tt.sni, tt.cert))
				obs := h.next()
				if obs.info.Policy != tt.policy {
					t.Fatalf("policy %s, want %s", policyName(obs.info.Policy), tt.policy.Name())
				}
				if !tt.ok {
					checkRefused(t, res, obs, tt.policy, ver.v, tt.reason)
					return
				}
				if err := res.err(); err != nil {
					t.Fatal(err)
				}
				info := h.nextAccepted()
				if info.Policy != tt.policy || info.SNI != tt.sni || info.Verdict.Result != Success {
					t.Errorf("Info policy %s SNI %q verdict %+v", policyName(info.Policy), info.SNI, info.Verdict)
				}
			})
		}
	}
}

// TestMissingCertificateText pins the crypto/tls error text the Server uses
// to recognise a Require handshake without a client certificate (server.go's
// errNoClientCert). If Go changes it, this fails instead of such clients
// being logged as generic TLS errors.
func TestMissingCertificateText(t *testing.T) {
	t.Parallel()
	f := getFixture(t)
	for _, ver := range versions {
		t.Run(ver.name, func(t *testing.T) {
			t.Parallel()
			// Plain crypto/tls: the text itself.
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			srvErr := make(chan error, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					srvErr <- err
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				s := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{f.server}, ClientAuth: tls.RequireAnyClientCert})
				srvErr <- s.Handshake()
			}()
			raw, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			raw.SetDeadline(time.Now().Add(10 * time.Second))
			c := tls.Client(raw, clientConfig(t, ver.v, "", nil))
			if c.Handshake() == nil {
				c.Read(make([]byte, 1))
			}
			c.Close()
			if err := <-srvErr; err == nil || !strings.Contains(err.Error(), errNoClientCert) {
				t.Fatalf("crypto/tls server error %v does not contain %q: update errNoClientCert in server.go", err, errNoClientCert)
			}

			// Through the Server: a *RejectError with reason missing.
			set := mustSet(t, PolicySpec{Mode: Require, CAs: caList(f.zoneCA)}, nil, mustTickets(t), nil)
			h := newHarness(t, set, ServerOptions{})
			res := h.dial(clientConfig(t, ver.v, "", nil))
			obs := h.next()
			var rej *RejectError
			if !errors.As(obs.err, &rej) || rej.Verdict.Result != None || rej.Verdict.Reason != ReasonMissing {
				t.Fatalf("Observe error %v (%T), want *RejectError with reason %q", obs.err, obs.err, ReasonMissing)
			}
			if res.err() == nil {
				t.Error("client was not refused")
			}
		})
	}
}

// sessionRedirect is a client session cache that, asked for to, returns the
// session stored for from: a client offering one server's ticket to another.
type sessionRedirect struct {
	tls.ClientSessionCache
	from, to string
}

func (c sessionRedirect) Get(key string) (*tls.ClientSessionState, bool) {
	if key == c.to {
		key = c.from
	}
	return c.ClientSessionCache.Get(key)
}

func withCache(cfg *tls.Config, cache tls.ClientSessionCache) *tls.Config {
	cfg.ClientSessionCache = cache
	return cfg
}

// admitted dials and returns the client state and the server's Info of an
// admitted connection.
func (h *harness) admitted(cfg *tls.Config) (tls.ConnectionState, *ConnInfo) {
	h.t.Helper()
	res := h.dial(cfg)
	obs := h.next()
	if err := res.err(); err != nil || obs.err != nil {
		h.t.Fatalf("connection refused: client %v, server %v", err, obs.err)
	}
	return res.state, h.nextAccepted()
}

func TestResumption(t *testing.T) {
	t.Parallel()
	f := getFixture(t)
	zoneSpec := PolicySpec{Mode: Require, CAs: caList(f.zoneCA)}
	hostsX := []PolicySpec{
		{Name: "a.example.com", Mode: Require, CAs: caList(f.zoneCA)},
		{Name: "b.example.com", Mode: Require, CAs: caList(f.zoneCA)},
		{Name: "*.w.example.com", Mode: Require, CAs: caList(f.zoneCA)},
	}
	leaf := tlsCert(f.zoneLeaf)

	for _, ver := range versions {
		t.Run(ver.name, func(t *testing.T) {
			t.Parallel()

			t.Run("same policy resumes", func(t *testing.T) {
				t.Parallel()
				set := mustSet(t, zoneSpec, hostsX, mustTickets(t), nil)
				h := newHarness(t, set, ServerOptions{})
				cache := tls.NewLRUClientSessionCache(8)
				for i, wantResumed := range []bool{false, true, true} {
					st, info := h.admitted(withCache(clientConfig(t, ver.v, "a.example.com", leaf), cache))
					if st.DidResume != wantResumed || info.Resumed != wantResumed {
						t.Fatalf("connection %d: client resumed %v, server Info.Resumed %v; want %v", i, st.DidResume, info.Resumed, wantResumed)
					}
					if info.Policy != set.Match("a.example.com") || info.Verdict.Result != Success || len(info.Peer) == 0 {
						t.Errorf("connection %d: policy %s verdict %+v peer %d", i, policyName(info.Policy), info.Verdict, len(info.Peer))
					}
				}
			})

			t.Run("ticket of another policy is not resumed", func(t *testing.T) {
				t.Parallel()
				set := mustSet(t, zoneSpec, hostsX, mustTickets(t), nil)
				h := newHarness(t, set, ServerOptions{})
				lru := tls.NewLRUClientSessionCache(8)
				if st, _ := h.admitted(withCache(clientConfig(t, ver.v, "a.example.com", leaf), lru)); st.DidResume {
					t.Fatal("first connection resumed")
				}
				st, info := h.admitted(withCache(clientConfig(t, ver.v, "b.example.com", leaf),
					sessionRedirect{lru, "a.example.com", "b.example.com"}))
				if st.DidResume || info.Resumed {
					t.Fatalf("a ticket issued under a.example.com resumed under b.example.com (client %v, server %v)", st.DidResume, info.Resumed)
				}
				if info.Policy != set.Match("b.example.com") || info.Verdict.Result != Success {
					t.Errorf("policy %s verdict %+v", policyName(info.Policy), info.Verdict)
				}

				// Control: the redirect does offer tickets; across two
				// names of one (wildcard) policy they resume.
				if st, _ := h.admitted(withCache(clientConfig(t, ver.v, "x.w.example.com", leaf), lru)); st.DidResume {
					t.Fatal("first wildcard connection resumed")
				}
				st, info = h.admitted(withCache(clientConfig(t, ver.v, "y.w.example.com", leaf),
					sessionRedirect{lru, "x.w.example.com", "y.w.example.com"}))
				if !st.DidResume || !info.Resumed {
					t.Fatal("control: a ticket offered under another name of the same policy was not resumed")
				}
			})

			t.Run("reload to a CA set without the client's CA refuses the ticket", func(t *testing.T) {
				t.Parallel()
				keys := mustTickets(t)
				set1 := mustSet(t, zoneSpec, hostsX, keys, nil)
				h := newHarness(t, set1, ServerOptions{})
				cache := tls.NewLRUClientSessionCache(8)
				h.admitted(withCache(clientConfig(t, ver.v, "a.example.com", leaf), cache))

				set2 := mustSet(t, PolicySpec{Mode: Require, CAs: caList(f.hostCA)},
					[]PolicySpec{{Name: "a.example.com", Mode: Require, CAs: caList(f.hostCA)}}, keys, nil)
				h.cur.Store(set2)
				// The client now has no certificate: a full handshake would
				// be refused as "missing", so "untrusted" shows that the
				// resumed session's chain was judged under the new CAs.
				res := h.dial(withCache(clientConfig(t, ver.v, "a.example.com", nil), cache))
				obs := h.next()
				checkRefused(t, res, obs, set2.Match("a.example.com"), ver.v, ReasonUntrusted)
				h.noneAccepted()
			})

			t.Run("reload with the same CA keeps resuming", func(t *testing.T) {
				t.Parallel()
				keys := mustTickets(t)
				h := newHarness(t, mustSet(t, zoneSpec, hostsX, keys, nil), ServerOptions{})
				cache := tls.NewLRUClientSessionCache(8)
				h.admitted(withCache(clientConfig(t, ver.v, "a.example.com", leaf), cache))

				set2 := mustSet(t, zoneSpec, hostsX, keys, nil)
				h.cur.Store(set2)
				st, info := h.admitted(withCache(clientConfig(t, ver.v, "a.example.com", nil), cache))
				if !st.DidResume || !info.Resumed {
					t.Fatal("not resumed across a reload with the same ticket keys and CA")
				}
				if info.Policy != set2.Match("a.example.com") || info.Verdict.Result != Success {
					t.Errorf("policy %s (new set: %v) verdict %+v", policyName(info.Policy), info.Policy == set2.Match("a.example.com"), info.Verdict)
				}
			})

			t.Run("reload with new ticket keys does not resume", func(t *testing.T) {
				t.Parallel()
				h := newHarness(t, mustSet(t, zoneSpec, hostsX, mustTickets(t), nil), ServerOptions{})
				cache := tls.NewLRUClientSessionCache(8)
				h.admitted(withCache(clientConfig(t, ver.v, "a.example.com", leaf), cache))
				h.cur.Store(mustSet(t, zoneSpec, hostsX, mustTickets(t), nil))
				if st, info := h.admitted(withCache(clientConfig(t, ver.v, "a.example.com", leaf), cache)); st.DidResume || info.Resumed {
					t.Fatal("a ticket resumed under unrelated ticket keys")
				}
			})

			t.Run("rotation keeps the previous key", func(t *testing.T) {
				t.Parallel()
				keys := mustTickets(t)
				set := mustSet(t, zoneSpec, hostsX, keys, nil)
				h := newHarness(t, set, ServerOptions{})

				cache := tls.NewLRUClientSessionCache(8)
				h.admitted(withCache(clientConfig(t, ver.v, "a.example.com", leaf), cache))
				if err := keys.Rotate(); err != nil {
					t.Fatal(err)
				}
				set.RefreshTicketKeys(keys)
				if st, info := h.admitted(withCache(clientConfig(t, ver.v, "a.example.com", leaf), cache)); !st.DidResume || !info.Resumed {
					t.Fatal("a ticket from before one rotation did not resume")
				}

				// Two rotations later the master that sealed a ticket is gone.
				stale := tls.NewLRUClientSessionCache(8)
				h.admitted(withCache(clientConfig(t, ver.v, "a.example.com", leaf), stale))
				for i := 0; i < 2; i++ {
					if err := keys.Rotate(); err != nil {
						t.Fatal(err)
					}
				}
				set.RefreshTicketKeys(keys)
				if st, info := h.admitted(withCache(clientConfig(t, ver.v, "a.example.com", leaf), stale)); st.DidResume || info.Resumed {
					t.Fatal("a ticket resumed after its master key was rotated out")
				}
			})
		})
	}
}

// acceptSignal wraps a listener and reports every accepted connection.
type acceptSignal struct {
	net.Listener
	accepted chan struct{}
}

func (l *acceptSignal) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted <- struct{}{}
	}
	return c, err
}

func TestListenerClose(t *testing.T) {
	t.Parallel()
	f := getFixture(t)
	set := mustSet(t, PolicySpec{Mode: Require, CAs: caList(f.zoneCA)}, nil, mustTickets(t), nil)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sig := &acceptSignal{Listener: inner, accepted: make(chan struct{}, 4)}
	obs := make(chan error, 4)
	ln := NewServer(func() *Set { return set }, ServerOptions{
		Sink: errSink(obs),
	}).Listener(sig)
	defer ln.Close()

	accErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if c != nil {
			c.Close()
		}
		accErr <- err
	}()

	// A client that connects and never sends a ClientHello.
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	<-sig.accepted

	// Meanwhile another client is served: the silent one blocks nobody.
	h := &harness{t: t, ln: ln, observed: make(chan observed, 1)}
	done := make(chan dialResult, 1)
	go func() { done <- h.dial(clientConfig(t, tls.VersionTLS13, "", tlsCert(f.zoneLeaf))) }()
	// The accept goroutine above takes this connection.
	if err := <-accErr; err != nil {
		t.Fatalf("Accept with a silent client pending: %v", err)
	}
	<-sig.accepted
	if err := <-obs; err != nil {
		t.Fatalf("second client: %v", err)
	}
	<-done

	if err := ln.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if c, err := ln.Accept(); err == nil || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close = %v, %v; want net.ErrClosed", c, err)
	}
	// The silent client's handshake is aborted: it sees EOF or a reset,
	// long before the default 10s handshake timeout.
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := raw.Read(make([]byte, 1))
	if n != 0 || err == nil || isTimeout(err) {
		t.Fatalf("silent client read %d bytes, %v; want EOF or reset", n, err)
	}
	select {
	case err := <-obs:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Observe for the aborted handshake: %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("Observe not called for the aborted handshake")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestHandshakeTimeout(t *testing.T) {
	t.Parallel()
	f := getFixture(t)
	set := mustSet(t, PolicySpec{Mode: Require, CAs: caList(f.zoneCA)}, nil, mustTickets(t), nil)
	h := newHarness(t, set, ServerOptions{HandshakeTimeout: 200 * time.Millisecond})

	tests := []struct {
		name string
		send []byte
	}{
		{"silent", nil},
		// A TLS record header promising a ClientHello that never comes.
		{"partial ClientHello", []byte{0x16, 0x03, 0x01, 0x01, 0x00, 0x01}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := net.Dial("tcp", h.ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			if _, err := raw.Write(tt.send); err != nil {
				t.Fatal(err)
			}
			raw.SetReadDeadline(time.Now().Add(8 * time.Second))
			_, err = io.ReadAll(raw)
			if isTimeout(err) {
				t.Fatal("the server did not close a stalled handshake")
			}
			o := h.next()
			if !errors.Is(o.err, context.DeadlineExceeded) {
				t.Errorf("Observe error %v, want context.DeadlineExceeded", o.err)
			}
			if o.info.Policy != nil {
				t.Errorf("Observe policy %s for a handshake without ClientHello", o.info.Policy.Name())
			}
			if o.remote.String() != raw.LocalAddr().String() {
				t.Errorf("Observe remote %v, want %v", o.remote, raw.LocalAddr())
			}
		})
	}
}

// TestConcurrentHandshakes runs many clients at once under -race.
func TestConcurrentHandshakes(t *testing.T) {
	t.Parallel()
	f := getFixture(t)
	rec := &counterRec{}
	set := mustSet(t, PolicySpec{Mode: LogOnly, CAs: caList(f.zoneCA)}, nil, mustTickets(t), rec)
	h := newHarness(t, set, ServerOptions{})
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			cert := tlsCert(f.zoneLeaf)
			if i%2 == 1 {
				cert = tlsCert(f.untrusted)
			}
			errs <- h.dial(clientConfig(t, versions[i%len(versions)].v, "", cert)).err()
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for i := 0; i < n; i++ {
		h.next()
		h.nextAccepted()
	}
	counts := rec.counts()
	if counts[labels(ZoneName, "log-only", "success", "allow")] != n/2 || counts[labels(ZoneName, "log-only", "failed", "would_reject")] != n/2 {
		t.Errorf("counters %v", counts)
	}
}

func TestInfoOfOtherConns(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Info(a) != nil {
		t.Error("Info of a plain conn is not nil")
	}
	if Info(tls.Client(a, &tls.Config{})) != nil {
		t.Error("Info of a tls.Conn not from a Server is not nil")
	}
}

// errSink passes on each handshake's error.
type errSink chan error

func (s errSink) Handshake(h Handshake) { s <- h.Err }
func (s errSink) Request(Request)       {}
