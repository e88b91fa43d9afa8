package cloudflare

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aopguard/aopguard/certs"
	"github.com/aopguard/aopguard/internal/cffake"
	"github.com/aopguard/aopguard/internal/testpki"
	"github.com/aopguard/aopguard/tlsconfig"
)

const (
	testToken  = "cf-token-SECRET-7f3a9c"
	testZoneID = "023e105f4ecef8ad9ca31a8372d0c353"
)

func newClient(t *testing.T, fake *cffake.Server, dry *bytes.Buffer) *Client {
	t.Helper()
	o := Options{Token: testToken, BaseURL: fake.APIURL()}
	if dry != nil {
		o.DryRun = dry
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func noToken(t *testing.T, where string, s string) {
	t.Helper()
	if strings.Contains(s, testToken) {
		t.Errorf("the API token appears in %s:\n%s", where, s)
	}
}

func TestResolveZoneAndReadState(t *testing.T) {
	w := newWorld(t)
	fake := cffake.New(t, testToken, testZoneID, "example.com")
	fake.Zones = append([]*cffake.Zone{{ID: "11111111111111111111111111111111", Name: "other.test"},
		{ID: "22222222222222222222222222222222", Name: "third.test"}}, fake.Zones...)
	z := fake.Zones[2]
	z.Global, z.ZoneLevel = true, true
	z.ZoneCerts = append(z.ZoneCerts, fake.Add(string(w.zoneLeaf.CertPEM()), string(w.zoneLeaf.KeyPEM()), "active"))
	hc := fake.Add(string(w.hostLeaf.CertPEM()), string(w.hostLeaf.KeyPEM()), "active")
	z.HostCerts = append(z.HostCerts, hc)
	z.Links["app.example.com"] = &cffake.Link{CertID: hc.ID, Enabled: true, Status: "active"}
	z.Links["legacy.example.com"] = &cffake.Link{CertID: hc.ID, Enabled: true, Status: "active"}
	z.Links["off.example.com"] = &cffake.Link{CertID: hc.ID, Enabled: false, Status: "active"}
	z.Links["void.example.com"] = &cffake.Link{CertID: hc.ID, Voided: true, Status: "active"}
	z.Proxied = []string{"app.example.com", "a.example.com", "b.example.com", "legacy.example.com", "c.example.com"}
	fake.RateLimit = 1 // the first request is answered 429 Retry-After: 0

	c := newClient(t, fake, nil)
	ctx := context.Background()
	id, err := c.ResolveZone(ctx, "example.com")
	if err != nil || id != testZoneID {
		t.Fatalf("ResolveZone(example.com) = %q, %v", id, err)
	}
	if fake.Limited != 1 {
		t.Errorf("the 429 was not met (%d)", fake.Limited)
	}
	if _, err := c.ResolveZone(ctx, "missing.test"); err == nil {
		t.Error("an unknown zone name resolved")
	}
	st, err := c.ReadState(ctx, id, []string{"app.example.com", "staged.example.com", "off.example.com", "void.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Global || !st.ZoneLevel || st.ZoneCert() == nil || st.ZoneCert().Fingerprint != certs.Fingerprint(w.zoneLeaf.Cert.Raw) {
		t.Errorf("levels: %+v", st)
	}
	if len(st.Proxied) != 5 {
		t.Errorf("proxied names over %d-record pages: %v", cffake.PerPage, st.Proxied)
	}
	if h := st.Hostnames["app.example.com"]; !h.Enabled || h.Cert.Fingerprint != certs.Fingerprint(w.hostLeaf.Cert.Raw) {
		t.Errorf("app.example.com: %+v", h)
	}
	if h, ok := st.Hostnames["off.example.com"]; !ok || h.Enabled {
		t.Errorf("an explicitly disabled link: %+v %v", h, ok)
	}
	if h, ok := st.Hostnames["void.example.com"]; ok {
		t.Errorf("a voided (enabled null) link counts as an association: %+v", h)
	}
	if _, ok := st.Hostnames["legacy.example.com"]; !ok {
		t.Error("legacy.example.com, proxied with per-hostname AOP, was not looked up")
	}
	rep := Audit(st, w.policies(t), time.Now())
	if r := rowFor(t, rep, "legacy.example.com"); !r.Unnamed || r.Verdict != WillBreak {
		t.Errorf("legacy.example.com: %+v", r)
	}
}

func TestPermissionErrors(t *testing.T) {
	fake := cffake.New(t, testToken, testZoneID, "example.com")
	c := newClient(t, fake, nil)
	ctx := context.Background()

	fake.Deny = []string{"/dns_records"}
	st, err := c.ReadState(ctx, testZoneID, nil)
	if err != nil {
		t.Fatalf("without DNS Read the audit should go on: %v", err)
	}
	if len(st.Notes) == 0 || !strings.Contains(st.Notes[0], "DNS") {
		t.Errorf("notes %v do not say DNS records could not be read", st.Notes)
	}

	fake.Deny = []string{"/origin_tls_client_auth"}
	_, err = c.ReadState(ctx, testZoneID, nil)
	if err == nil || !strings.Contains(err.Error(), "HTTP 403") || !strings.Contains(err.Error(), "10000 Authentication error") {
		t.Fatalf("403: %v", err)
	}
	noToken(t, "a 403 error", err.Error())
	var unwrapped []string
	for e := err; e != nil; e = errors.Unwrap(e) {
		unwrapped = append(unwrapped, e.Error())
	}
	noToken(t, "the wrapped errors", strings.Join(unwrapped, "\n"))

	bad, _ := New(Options{Token: "wrong-" + testToken, BaseURL: fake.APIURL()})
	_, err = bad.ReadState(ctx, testZoneID, nil)
	if err == nil {
		t.Fatal("a wrong token was accepted")
	}
	noToken(t, "a refused token's error", err.Error())
	if strings.Contains(err.Error(), "wrong-") {
		t.Errorf("the refused token appears in the error: %v", err)
	}
	down, _ := New(Options{Token: testToken, BaseURL: "http://127.0.0.1:1/client/v4/", MaxRetries: -1})
	if _, err = down.ReadState(ctx, testZoneID, nil); err == nil {
		t.Fatal("an unreachable API answered")
	}
	noToken(t, "a transport error", err.Error())
	if _, err := New(Options{}); err == nil || !strings.Contains(err.Error(), "CLOUDFLARE_API_TOKEN") {
		t.Errorf("no token: %v", err)
	}
}

func applyOpts(w *world, set *tlsconfig.Set, leaf *testpki.Cert, out *bytes.Buffer) ApplyOptions {
	return ApplyOptions{ZoneID: testZoneID, Upload: &Upload{CertPEM: leaf.CertPEM(), KeyPEM: leaf.KeyPEM()},
		Policies: set, Out: out, Wait: 10 * time.Second, Poll: time.Millisecond}
}

func TestApplyIsIdempotent(t *testing.T) {
	w := newWorld(t)
	set := w.policies(t)
	for _, zoneLevel := range []bool{false, true} {
		name := map[bool]string{false: "hostnames", true: "zone-level"}[zoneLevel]
		t.Run(name, func(t *testing.T) {
			fake := cffake.New(t, testToken, testZoneID, "example.com")
			c := newClient(t, fake, nil)
			leaf := w.hostLeaf
			if zoneLevel {
				leaf = w.zoneLeaf
			}
			var out bytes.Buffer
			o := applyOpts(w, set, leaf, &out)
			if zoneLevel {
				o.ZoneLevel = true
				// The hosts with a CA of their own must keep their
				// per-hostname certificate, or zone-level is refused.
				_, err := c.Apply(context.Background(), o)
				if err == nil || !strings.Contains(err.Error(), "app.example.com has no per-hostname certificate") || fake.WriteCount() != 0 {
					t.Fatalf("zone-level over require hosts without their own certificate: %v, %d writes", err, fake.WriteCount())
				}
				hc := fake.Add(string(w.hostLeaf.CertPEM()), string(w.hostLeaf.KeyPEM()), "active")
				z := fake.Zone()
				z.HostCerts = append(z.HostCerts, hc)
				for _, h := range []string{"app.example.com", "*.wild.example.com"} {
					z.Links[h] = &cffake.Link{CertID: hc.ID, Enabled: true, Status: "active"}
				}
			} else {
				o.Hostnames = []string{"app.example.com", "x.wild.example.com"}
			}
			out.Reset()
			n, err := c.Apply(context.Background(), o)
			if err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			if zoneLevel && !strings.Contains(out.String(), "warning: staged.example.com has no per-hostname certificate") {
				t.Errorf("no warning for the log-only host that would get the zone certificate:\n%s", out.String())
			}
			if n != 2 || fake.WriteCount() != 2 {
				t.Errorf("first run: %d writes reported, %d received; want 2 (upload, link)", n, fake.WriteCount())
			}
			if !strings.Contains(out.String(), "active at Cloudflare") || !strings.Contains(out.String(), "pending_deployment") {
				t.Errorf("did not wait from pending_deployment to active:\n%s", out.String())
			}
			before := fake.WriteCount()
			out.Reset()
			n, err = c.Apply(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if n != 0 || fake.WriteCount() != before {
				t.Errorf("second run wrote (%d reported, %d received):\n%s", n, fake.WriteCount()-before, out.String())
			}
			noToken(t, "apply output", out.String())
		})
	}
}

func TestApplyRefusesUntrustedHostname(t *testing.T) {
	w := newWorld(t)
	fake := cffake.New(t, testToken, testZoneID, "example.com")
	c := newClient(t, fake, nil)
	var out bytes.Buffer
	o := applyOpts(w, w.policies(t), w.rogueLeaf, &out)
	o.Hostnames = []string{"app.example.com"}
	_, err := c.Apply(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "refusing to link app.example.com") {
		t.Fatalf("err = %v", err)
	}
	// A zone certificate is not trusted by a host with its own CA either.
	o = applyOpts(w, w.policies(t), w.zoneLeaf, &out)
	o.Hostnames = []string{"a.wild.example.com"}
	if _, err := c.Apply(context.Background(), o); err == nil || !strings.Contains(err.Error(), tlsconfig.ReasonZoneCertOnHost) {
		t.Fatalf("err = %v", err)
	}
	if fake.WriteCount() != 0 {
		t.Errorf("a refused apply wrote %d times", fake.WriteCount())
	}
}

func TestApplyDryRunWritesNothing(t *testing.T) {
	w := newWorld(t)
	fake := cffake.New(t, testToken, testZoneID, "example.com")
	var dry bytes.Buffer
	c := newClient(t, fake, &dry)
	var out bytes.Buffer
	o := applyOpts(w, w.policies(t), w.hostLeaf, &out)
	o.Hostnames = []string{"app.example.com"}
	n, err := c.Apply(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if fake.WriteCount() != 0 || n != 2 {
		t.Errorf("dry run: %d writes reached the API, %d reported; want 0 and 2", fake.WriteCount(), n)
	}
	printed := dry.String()
	for _, want := range []string{"POST /client/v4/zones/" + testZoneID + "/origin_tls_client_auth/hostnames/certificates",
		`"private_key":"[REDACTED]"`, "PUT /client/v4/zones/" + testZoneID + "/origin_tls_client_auth/hostnames", `"cert_id":"dry-run"`} {
		if !strings.Contains(printed, want) {
			t.Errorf("dry run output lacks %s:\n%s", want, printed)
		}
	}
	keyBody := strings.Split(strings.TrimSpace(string(w.hostLeaf.KeyPEM())), "\n")[1]
	for name, s := range map[string]string{"dry-run output": printed, "apply output": out.String()} {
		noToken(t, name, s)
		if strings.Contains(s, keyBody) || strings.Contains(s, "PRIVATE KEY") {
			t.Errorf("the private key appears in the %s:\n%s", name, s)
		}
	}
}

// origin is a stand-in for the running aopguard's admin endpoints.
type origin struct {
	set  *tlsconfig.Set
	seen atomic.Value // fingerprint Cloudflare presented last
}

func (o *origin) Trust(_ context.Context, host string, pemText []byte) (bool, string, string, error) {
	chain, err := certs.ParseBundle(pemText)
	if err != nil {
		return false, "", "", err
	}
	p := o.set.Match(host)
	v := p.Verify(chain)
	return v.Result == tlsconfig.Success, p.Name(), v.Reason, nil
}

func (o *origin) Seen(_ context.Context, host, fp string) (bool, error) {
	s, _ := o.seen.Load().(string)
	return s == fp, nil
}

func TestRotate(t *testing.T) {
	w := newWorld(t)
	set := w.policies(t)
	fake := cffake.New(t, testToken, testZoneID, "example.com")
	old := fake.Add(string(w.hostLeaf.CertPEM()), string(w.hostLeaf.KeyPEM()), "active")
	z := fake.Zone()
	z.HostCerts = append(z.HostCerts, old)
	z.Links["app.example.com"] = &cffake.Link{CertID: old.ID, Enabled: true, Status: "active"}
	org := &origin{set: set}
	fake.Linked = func(host string, cert tls.Certificate) { org.seen.Store(certs.Fingerprint(cert.Certificate[0])) }
	c := newClient(t, fake, nil)
	var out bytes.Buffer
	ro := RotateOptions{ZoneID: testZoneID, Host: "app.example.com", Origin: org, DeleteOld: true, Out: &out, Wait: 10 * time.Second, Poll: time.Millisecond}

	ro.Upload = &Upload{CertPEM: w.rogueLeaf.CertPEM(), KeyPEM: w.rogueLeaf.KeyPEM()}
	if err := c.Rotate(context.Background(), ro); err == nil || !strings.Contains(err.Error(), "refusing to rotate") {
		t.Fatalf("rotating to an untrusted certificate: %v", err)
	}
	if fake.WriteCount() != 0 {
		t.Fatalf("a refused rotation wrote %d times", fake.WriteCount())
	}

	next := testpki.Client(t, w.hostCA, "app.example.com 2")
	ro.Upload = &Upload{CertPEM: next.CertPEM(), KeyPEM: next.KeyPEM()}
	if err := c.Rotate(context.Background(), ro); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	fake.Mu.Lock()
	defer fake.Mu.Unlock()
	if l := z.Links["app.example.com"]; l.Status != "active" || l.CertID == old.ID {
		t.Errorf("link after rotation: %+v", l)
	}
	if len(z.HostCerts) != 1 || z.HostCerts[0].ID == old.ID {
		t.Errorf("the old certificate was not deleted: %d certificates", len(z.HostCerts))
	}
	for _, step := range []string{"1/6", "2/6", "3/6", "4/6", "5/6", "6/6 deleting the old certificate " + old.ID, "rotation complete"} {
		if !strings.Contains(out.String(), step) {
			t.Errorf("output lacks %q:\n%s", step, out.String())
		}
	}
	noToken(t, "rotate output", out.String())
}

// blind is an origin that trusts everything and never sees Cloudflare.
type blind struct{}

func (blind) Trust(context.Context, string, []byte) (bool, string, string, error) {
	return true, "app.example.com", "", nil
}
func (blind) Seen(context.Context, string, string) (bool, error) { return false, nil }

// TestRotateKeepsOldUntilSeen: when the origin never sees the new
// certificate, rotate gives up after --wait and deletes nothing.
func TestRotateKeepsOldUntilSeen(t *testing.T) {
	w := newWorld(t)
	fake := cffake.New(t, testToken, testZoneID, "example.com")
	fake.ReadsToActive = 0
	old := fake.Add(string(w.hostLeaf.CertPEM()), string(w.hostLeaf.KeyPEM()), "active")
	z := fake.Zone()
	z.HostCerts = append(z.HostCerts, old)
	z.Links["app.example.com"] = &cffake.Link{CertID: old.ID, Enabled: true, Status: "active"}
	next := testpki.Client(t, w.hostCA, "app.example.com 2")
	var out bytes.Buffer
	err := newClient(t, fake, nil).Rotate(context.Background(), RotateOptions{ZoneID: testZoneID, Host: "app.example.com",
		Upload: &Upload{CertPEM: next.CertPEM(), KeyPEM: next.KeyPEM()}, Origin: blind{}, DeleteOld: true, Out: &out,
		Wait: time.Second, Poll: 10 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "the old certificate is kept") {
		t.Fatalf("err = %v\n%s", err, out.String())
	}
	fake.Mu.Lock()
	defer fake.Mu.Unlock()
	if find := len(z.HostCerts); find != 2 {
		t.Errorf("%d certificates at Cloudflare, want old and new", find)
	}
}
