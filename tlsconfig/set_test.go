package tlsconfig

import (
	"crypto/tls"
	"github.com/aopguard/aopguard/cfips"
	"sort"
	"strings"
	"testing"
)

func TestSetMatch(t *testing.T) {
	t.Parallel()
	f := getFixture(t)
	cas := caList(f.zoneCA)
	hosts := []PolicySpec{
		{Name: "example.com", Mode: Require, CAs: cas},
		{Name: "*.example.com", Mode: Require, CAs: cas},
		{Name: "a.example.com", Mode: Require, CAs: cas},
		{Name: "*.b.example.com", Mode: Require, CAs: cas},
		{Name: "Shop.Example.ORG.", Mode: Require, CAs: cas},
	}
	s := mustSet(t, PolicySpec{Mode: Require, CAs: cas}, hosts, mustTickets(t), nil)

	tests := []struct {
		name string
		want string
	}{
		{"example.com", "example.com"},
		{"EXAMPLE.com", "example.com"},
		{"example.com.", "example.com"},
		{"a.example.com", "a.example.com"}, // exact beats wildcard
		{"A.EXAMPLE.COM.", "a.example.com"},
		{"c.example.com", "*.example.com"},
		{"C.Example.Com.", "*.example.com"},
		{"b.example.com", "*.example.com"},
		{"x.b.example.com", "*.b.example.com"},
		{"X.B.Example.com", "*.b.example.com"},
		{"a.c.example.com", ZoneName}, // a wildcard covers one label only
		{"example.org", ZoneName},
		{"shop.example.org", "Shop.Example.ORG."},
		{"shop.example.org.", "Shop.Example.ORG."},
		{"x.shop.example.org", ZoneName},
		{"", ZoneName},
		{"127.0.0.1", ZoneName},
		{"::1", ZoneName},
		{"unknown.test", ZoneName},
		{".example.com", ZoneName},
		{"com", ZoneName},
	}
	for _, tt := range tests {
		if got := s.Match(tt.name).Name(); got != tt.want {
			t.Errorf("Match(%q) = %s, want %s", tt.name, got, tt.want)
		}
	}
	if s.Match("") != s.Zone() {
		t.Error("Match(\"\") is not Zone()")
	}
	// Policies lists the zone first, then hosts in configuration order,
	// and Index is the position.
	ps := s.Policies()
	if len(ps) != len(hosts)+1 || ps[0] != s.Zone() {
		t.Fatalf("Policies() = %d policies, zone first %v", len(ps), ps[0] == s.Zone())
	}
	for i, p := range ps {
		if p.Index() != i {
			t.Errorf("policy %s: Index %d, want %d", p.Name(), p.Index(), i)
		}
		if i > 0 && p.Name() != hosts[i-1].Name {
			t.Errorf("policy %d is %s, want %s", i, p.Name(), hosts[i-1].Name)
		}
	}
}

func TestNewSetErrors(t *testing.T) {
	t.Parallel()
	f := getFixture(t)
	cas := caList(f.zoneCA)
	keys := mustTickets(t)
	zone := PolicySpec{Mode: Require, CAs: cas}
	tests := []struct {
		name  string
		zone  PolicySpec
		hosts []PolicySpec
		opts  Options
		want  string
	}{
		{
			name:  "duplicate exact names",
			zone:  zone,
			hosts: []PolicySpec{{Name: "a.example.com", CAs: cas, Mode: Require}, {Name: "A.Example.com.", CAs: cas, Mode: LogOnly}},
			opts:  Options{Tickets: keys},
			want:  "configured twice",
		},
		{
			name:  "duplicate wildcards",
			zone:  zone,
			hosts: []PolicySpec{{Name: "*.example.com", CAs: cas, Mode: Require}, {Name: "*.EXAMPLE.COM", CAs: cas, Mode: Require}},
			opts:  Options{Tickets: keys},
			want:  "configured twice",
		},
		{
			name: "zone require without CAs",
			zone: PolicySpec{Mode: Require},
			opts: Options{Tickets: keys},
			want: "needs at least one CA",
		},
		{
			name: "zone log-only without CAs",
			zone: PolicySpec{Mode: LogOnly},
			opts: Options{Tickets: keys},
			want: "needs at least one CA",
		},
		{
			name:  "host require without CAs",
			zone:  zone,
			hosts: []PolicySpec{{Name: "a.example.com", Mode: Require}},
			opts:  Options{Tickets: keys},
			want:  "a.example.com",
		},
		{
			name: "missing tickets",
			zone: zone,
			want: "Tickets is required",
		},
		{
			name:  "nested wildcard",
			zone:  zone,
			hosts: []PolicySpec{{Name: "*.*.example.com", CAs: cas, Mode: Require}},
			opts:  Options{Tickets: keys},
			want:  "wildcard",
		},
		{
			name:  "wildcard in the middle",
			zone:  zone,
			hosts: []PolicySpec{{Name: "foo.*.com", CAs: cas, Mode: Require}},
			opts:  Options{Tickets: keys},
			want:  "wildcard",
		},
		{
			name: "unknown mode",
			zone: PolicySpec{Mode: Mode(7), CAs: cas},
			opts: Options{Tickets: keys},
			want: "unknown mode",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewSet(tt.zone, tt.hosts, tt.opts)
			if err == nil {
				t.Fatalf("NewSet succeeded with %d policies", len(s.Policies()))
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}

	t.Run("off needs no CAs", func(t *testing.T) {
		s, err := NewSet(PolicySpec{Mode: Off}, []PolicySpec{{Name: "a.example.com", Mode: Off}}, Options{Tickets: keys})
		if err != nil {
			t.Fatal(err)
		}
		if s.Zone().Name() != ZoneName || s.Zone().Mode() != Off {
			t.Errorf("zone = %s %s", s.Zone().Name(), s.Zone().Mode())
		}
	})
}

func TestPolicyTLSConfig(t *testing.T) {
	t.Parallel()
	f := getFixture(t)
	cas := caList(f.zoneCA)
	s := mustSet(t, PolicySpec{Mode: Off, Upstream: "http://zone"}, []PolicySpec{
		{Name: "l.example.com", Mode: LogOnly, CAs: cas, Upstream: "http://l"},
		{Name: "r.example.com", Mode: Require, CAs: cas},
	}, mustTickets(t), nil)
	tests := []struct {
		name     string
		auth     tls.ClientAuthType
		verify   bool
		upstream string
	}{
		{ZoneName, tls.NoClientCert, false, "http://zone"},
		{"l.example.com", tls.RequestClientCert, false, "http://l"},
		{"r.example.com", tls.RequireAnyClientCert, true, ""},
	}
	for _, tt := range tests {
		p := s.Match(tt.name)
		c := p.TLSConfig()
		if c.ClientAuth != tt.auth || (c.VerifyConnection != nil) != tt.verify {
			t.Errorf("%s: ClientAuth %v, VerifyConnection set %v; want %v, %v", tt.name, c.ClientAuth, c.VerifyConnection != nil, tt.auth, tt.verify)
		}
		if c.MinVersion != tls.VersionTLS12 {
			t.Errorf("%s: MinVersion %x", tt.name, c.MinVersion)
		}
		if strings.Join(c.NextProtos, ",") != "h2,http/1.1,http/1.0" {
			t.Errorf("%s: NextProtos %q", tt.name, c.NextProtos)
		}
		if p.Upstream() != tt.upstream {
			t.Errorf("%s: Upstream %q, want %q", tt.name, p.Upstream(), tt.upstream)
		}
	}
}

func TestModeStrings(t *testing.T) {
	t.Parallel()
	for _, m := range []Mode{Off, LogOnly, Require} {
		got, err := ParseMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseMode(%q) = %v, %v", m.String(), got, err)
		}
	}
	for _, s := range []string{"", "Require", "logonly", "log_only", "on"} {
		if _, err := ParseMode(s); err == nil {
			t.Errorf("ParseMode(%q) succeeded", s)
		}
	}
	if Mode(9).String() != "Mode(9)" {
		t.Errorf("Mode(9).String() = %q", Mode(9).String())
	}
	headers := map[Verdict]string{
		{Result: Success}:                   "SUCCESS",
		{Result: None, Reason: "missing"}:   "NONE",
		{Result: None}:                      "NONE",
		{Result: Failed, Reason: "expired"}: "FAILED:expired",
	}
	for v, want := range headers {
		if got := v.Header(); got != want {
			t.Errorf("%+v.Header() = %q, want %q", v, got, want)
		}
	}
}

func TestCounters(t *testing.T) {
	t.Parallel()
	f := getFixture(t)
	cas := caList(f.zoneCA)
	failures := func(action string, sigs Signatures) []string {
		var out []string
		for _, r := range FailureReasons {
			if r != ReasonClassical || sigs == PostQuantum {
				out = append(out, "failed/"+r+"/"+action)
			}
		}
		return out
	}
	tests := []struct {
		mode     Mode
		sigs     Signatures
		resolved []string // result/reason/action, per source
		// count: the result/action each verdict increments ("" for none).
		count map[Verdict]string
	}{
		{
			mode:     Off,
			resolved: []string{"none//allow"},
			count: map[Verdict]string{
				{Result: None}: "none/allow", {Result: Success}: "", {Result: Failed, Reason: ReasonUntrusted}: "",
			},
		},
		{
			mode:     LogOnly,
			resolved: append([]string{"success//allow", "none/missing/would_reject"}, failures("would_reject", AnySignatures)...),
			count: map[Verdict]string{
				{Result: None, Reason: ReasonMissing}: "none/would_reject", {Result: Success}: "success/allow",
				{Result: Failed, Reason: ReasonZoneCertOnHost}: "failed/would_reject", {Result: None}: "",
			},
		},
		{
			mode:     Require,
			resolved: append([]string{"success//allow", "none/missing/reject"}, failures("reject", AnySignatures)...),
			count: map[Verdict]string{
				{Result: None, Reason: ReasonMissing}: "none/reject", {Result: Success}: "success/allow",
				{Result: Failed, Reason: ReasonExpired}: "failed/reject", {Result: Failed, Reason: "made-up"}: "",
				{Result: Failed, Reason: ReasonClassical}: "", {Result: None, Reason: ReasonNeedsTLS13}: "",
			},
		},
		{
			mode: LogOnly, sigs: PostQuantum,
			resolved: append([]string{"success//allow", "none/missing/would_reject", "none/needs_tls13/would_reject"}, failures("would_reject", PostQuantum)...),
			count: map[Verdict]string{
				{Result: Failed, Reason: ReasonClassical}: "failed/would_reject", {Result: None, Reason: ReasonNeedsTLS13}: "none/would_reject",
				{Result: Success}: "success/allow",
			},
		},
		{
			mode: Require, sigs: PostQuantum,
			resolved: append([]string{"success//allow", "none/missing/reject", "none/needs_tls13/reject"}, failures("reject", PostQuantum)...),
			count: map[Verdict]string{
				{Result: Failed, Reason: ReasonClassical}: "failed/reject", {Result: None, Reason: ReasonNeedsTLS13}: "none/reject",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.mode.String()+"/"+tt.sigs.String(), func(t *testing.T) {
			t.Parallel()
			rec := &counterRec{}
			s := mustSet(t, PolicySpec{Mode: tt.mode, Signatures: tt.sigs, CAs: cas},
				[]PolicySpec{{Name: "h.example.com", Mode: tt.mode, Signatures: tt.sigs, CAs: cas}}, mustTickets(t), rec)
			var want []string
			for _, host := range []string{"_zone", "h.example.com"} {
				for _, r := range tt.resolved {
					parts := strings.SplitN(r, "/", 3)
					for _, src := range []string{cfips.Cloudflare, cfips.Other} {
						want = append(want, strings.Join([]string{host, tt.mode.String(), parts[0], parts[1], parts[2], src}, "/"))
					}
				}
			}
			sort.Strings(want)
			if got := rec.resolvedSorted(); strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("resolved label sets\n got %q\nwant %q", got, want)
			}
			p := s.Match("h.example.com")
			for v, wantKey := range tt.count {
				for _, src := range []string{cfips.Other, cfips.Cloudflare} {
					before := rec.counts()
					p.Count(v, src)
					after := rec.counts()
					var changed []string
					for k, n := range after {
						if n != before[k] {
							changed = append(changed, k)
						}
					}
					want := ""
					if wantKey != "" {
						want = "h.example.com/" + tt.mode.String() + "/" + wantKey
						if src == cfips.Cloudflare {
							want += "/" + cfips.Cloudflare
						}
					}
					if strings.Join(changed, " ") != want {
						t.Errorf("Count(%+v, %s) incremented %q, want %q", v, src, changed, want)
					}
				}
			}
		})
	}

	t.Run("no Counter option", func(t *testing.T) {
		t.Parallel()
		p := newPolicy(t, Require, f.zoneCA)
		p.Count(Verdict{Result: Failed, Reason: ReasonUntrusted}, cfips.Other) // must not panic
	})
}

func TestActionFor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		mode   Mode
		result Result
		want   Action
	}{
		{Off, None, Allow},
		{Off, Failed, Allow},
		{LogOnly, Success, Allow},
		{LogOnly, None, WouldReject},
		{LogOnly, Failed, WouldReject},
		{Require, Success, Allow},
		{Require, None, Reject},
		{Require, Failed, Reject},
	}
	for _, tt := range tests {
		p := &Policy{mode: tt.mode}
		if got := p.ActionFor(Verdict{Result: tt.result}); got != tt.want {
			t.Errorf("%s/%s: ActionFor = %s, want %s", tt.mode, tt.result, got, tt.want)
		}
	}
}

func TestTicketKeysPerPolicy(t *testing.T) {
	t.Parallel()
	k := mustTickets(t)
	a, a2, b := k.forPolicy("a.example.com"), k.forPolicy("A.Example.com."), k.forPolicy("b.example.com")
	if len(a) != 1 || a[0] != a2[0] {
		t.Error("keys for the same name differ by case or trailing dot")
	}
	if a[0] == b[0] {
		t.Error("two policies share a ticket key")
	}
	if other := mustTickets(t).forPolicy("a.example.com"); other[0] == a[0] {
		t.Error("two keyrings derive the same key")
	}
	for i := 0; i < 3; i++ {
		if err := k.Rotate(); err != nil {
			t.Fatal(err)
		}
	}
	after := k.forPolicy("a.example.com")
	if len(after) != maxTicketMasters {
		t.Fatalf("%d keys after rotations, want %d", len(after), maxTicketMasters)
	}
	for _, x := range after {
		if x == a[0] {
			t.Error("the original key survived three rotations")
		}
	}
}
