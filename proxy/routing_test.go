package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aopguard/aopguard/tlsconfig"
)

func TestRouting(t *testing.T) {
	pki := newPKI(t)
	uz := newUpstream(t, "zone", nil)
	ua := newUpstream(t, "a", nil)
	uw := newUpstream(t, "wild", nil)
	uu := newUnixUpstream(t, "unix", nil)
	if !strings.HasPrefix(uu.url, "unix:///") {
		t.Fatalf("unix upstream URL %q", uu.url)
	}
	h := newHarness(t, pki, harnessConfig{
		zone: tlsconfig.PolicySpec{Mode: tlsconfig.Off, Upstream: uz.url},
		hosts: []tlsconfig.PolicySpec{
			{Name: "a.example.com", Mode: tlsconfig.Off, Upstream: ua.url},
			{Name: "*.w.example.com", Mode: tlsconfig.LogOnly, CAs: cas(pki.caA), Upstream: uw.url},
			{Name: "u.example.com", Mode: tlsconfig.Off, Upstream: uu.url},
		},
	})
	all := []*upstream{uz, ua, uw, uu}
	tests := []struct {
		sni, host string
		to        *upstream
		policy    string
	}{
		{"a.example.com", "a.example.com", ua, "a.example.com"},
		{"a.example.com", "x.w.example.com", uw, "*.w.example.com"},
		{"x.w.example.com", "x.w.example.com", uw, "*.w.example.com"},
		{"a.example.com", "X.W.Example.Com:443", uw, "*.w.example.com"},
		{"a.example.com", "w.example.com", uz, "_zone"},     // a wildcard does not match its parent
		{"a.example.com", "y.x.w.example.com", uz, "_zone"}, // nor two labels down
		{"a.example.com", "u.example.com", uu, "u.example.com"},
		{"u.example.com", "u.example.com:8443", uu, "u.example.com"},
		{"a.example.com", "other.example.net", uz, "_zone"},
		{"other.example.net", "other.example.net", uz, "_zone"},
		{"a.example.com", "127.0.0.1", uz, "_zone"},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprintf("%s via %s", tt.host, tt.sni), func(t *testing.T) {
			c, _ := h.client(t, clientOpts{sni: tt.sni})
			path := fmt.Sprintf("/route/%d", i)
			res := get(t, c, "GET", "https://"+tt.sni+path+"?q=1", tt.host, nil)
			if want := "upstream " + tt.to.name + "\n"; res.status != http.StatusOK || res.body != want {
				t.Errorf("got %d %q, want 200 %q", res.status, res.body, want)
			}
			for _, u := range all {
				got := u.got(path)
				if u != tt.to {
					if len(got) != 0 {
						t.Errorf("upstream %s also received the request", u.name)
					}
					continue
				}
				if len(got) != 1 {
					t.Fatalf("upstream %s received %d requests, want 1", u.name, len(got))
				}
				if got[0].Host != tt.host {
					t.Errorf("upstream Host %q, want %q", got[0].Host, tt.host)
				}
			}
			if p := h.log.access(t, path)["policy"]; p != tt.policy {
				t.Errorf("access line policy %v, want %s", p, tt.policy)
			}
		})
	}
}

func TestRoutesRejectsBadUpstream(t *testing.T) {
	pki := newPKI(t)
	tickets, err := tlsconfig.NewTicketKeys()
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"http://[::1", "http://a b/"} {
		set, err := tlsconfig.NewSet(tlsconfig.PolicySpec{Mode: tlsconfig.Off, Upstream: "http://127.0.0.1:1"},
			[]tlsconfig.PolicySpec{{Name: "a.example.com", Mode: tlsconfig.LogOnly, CAs: cas(pki.caA), Upstream: bad}},
			tlsconfig.Options{Tickets: tickets})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := NewUpstreams(discardLogger(), nil).Routes(set, time.Second); err == nil || !strings.Contains(err.Error(), "a.example.com") {
			t.Errorf("Routes with upstream %q: err = %v, want an error naming the policy", bad, err)
		}
	}
}

func TestUpstreamFailures(t *testing.T) {
	pki := newPKI(t)
	release := make(chan struct{})
	slow := newUpstream(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(release) }) // before slow's Close, which waits for its handlers
	down := closedURL(t)
	missingSock := "unix:///nonexistent-aopguard-test/up.sock"
	h := newHarness(t, pki, harnessConfig{
		zone: tlsconfig.PolicySpec{Mode: tlsconfig.Off, Upstream: down},
		hosts: []tlsconfig.PolicySpec{
			{Name: "down.example.com", Mode: tlsconfig.Off, Upstream: down},
			{Name: "slow.example.com", Mode: tlsconfig.Off, Upstream: slow.url},
			{Name: "nosock.example.com", Mode: tlsconfig.Off, Upstream: missingSock},
		},
		// Short, so that the slow upstream times out: only the status is
		// asserted, never how long it took.
		timeout: 300 * time.Millisecond,
	})
	tests := []struct {
		host     string
		status   int
		upErr    string // in the access line's upstream_error
		internal []string
	}{
		{"down.example.com", http.StatusBadGateway, "connection refused", []string{strings.TrimPrefix(down, "http://")}},
		{"slow.example.com", http.StatusGatewayTimeout, "timeout awaiting response headers", []string{strings.TrimPrefix(slow.url, "http://")}},
		{"nosock.example.com", http.StatusBadGateway, "no such file", []string{"nonexistent-aopguard-test", "up.sock"}},
	}
	for _, proto := range protocols {
		for i, tt := range tests {
			t.Run(proto.name+"/"+tt.host, func(t *testing.T) {
				c, _ := h.client(t, clientOpts{sni: tt.host, h2: proto.h2})
				path := fmt.Sprintf("/fail/%s/%d", proto.name, i)
				res := get(t, c, "GET", "https://"+tt.host+path, "", nil)
				if res.status != tt.status {
					t.Errorf("status %d, want %d", res.status, tt.status)
				}
				if len(res.body) > 100 || !strings.HasPrefix(res.body, fmt.Sprint(tt.status)) {
					t.Errorf("body %q: want a short message starting with the status", res.body)
				}
				leaks := append([]string{"127.0.0.1", "dial", "refused", "unix", "timeout awaiting", "net/http", "no such file"}, tt.internal...)
				for _, leak := range leaks {
					if strings.Contains(res.body, leak) {
						t.Errorf("body %q reveals %q", res.body, leak)
					}
				}
				line := h.log.access(t, path)
				if ue, _ := line["upstream_error"].(string); !strings.Contains(ue, tt.upErr) {
					t.Errorf("access line upstream_error %q, want it to contain %q", ue, tt.upErr)
				}
				if line["status"] != float64(tt.status) {
					t.Errorf("access line status %v, want %d", line["status"], tt.status)
				}
			})
		}
	}
	// Each failure was counted by kind; none was observed as an upstream
	// latency.
	for _, tt := range tests {
		kind := "unavailable"
		if tt.status == http.StatusGatewayTimeout {
			kind = "timeout"
		}
		if got := h.requests.get("upstream_error", tt.host, kind); got != int64(len(protocols)) {
			t.Errorf("upstream_error %s %s = %d, want %d", tt.host, kind, got, len(protocols))
		}
		if got := h.requests.get("upstream", tt.host); got != 0 {
			t.Errorf("upstream latency observed %d times for a failed upstream", got)
		}
		if got := h.requests.get("duration", tt.host); got != int64(len(protocols)) {
			t.Errorf("request duration observed %d times, want %d", got, len(protocols))
		}
	}
}

// TestObserveAndHealthChecks: the observer sees each request with its
// policy and verdict; Cloudflare's load-balancer health checks are marked.
func TestObserveAndHealthChecks(t *testing.T) {
	pki := newPKI(t)
	up := newUpstream(t, "app", nil)
	h := newHarness(t, pki, harnessConfig{
		zone: tlsconfig.PolicySpec{Mode: tlsconfig.LogOnly, CAs: cas(pki.zoneCA), Upstream: up.url},
	})
	for _, tt := range []struct {
		ua     string
		health bool
	}{
		{"Mozilla/5.0 (compatible; Cloudflare-Traffic-Manager/1.0; +https://www.cloudflare.com/traffic-manager/; pool-id: 0123)", true},
		{"curl/8.0", false},
	} {
		c, _ := h.client(t, clientOpts{sni: "app.example.com"})
		res := get(t, c, "GET", "https://app.example.com/hc", "", http.Header{"User-Agent": {tt.ua}})
		if res.status != 200 {
			t.Fatalf("status %d", res.status)
		}
		ri := <-h.observed
		if ri.HealthCheck != tt.health || ri.Policy.Name() != tlsconfig.ZoneName || ri.Status != 200 ||
			ri.Verdict.Reason != tlsconfig.ReasonMissing || ri.Conn == nil || ri.Conn.Source != "other" {
			t.Errorf("UA %q: observed %+v", tt.ua, ri)
		}
	}
	if got := h.requests.get("upstream", tlsconfig.ZoneName); got != 2 {
		t.Errorf("upstream latency observed %d times, want 2", got)
	}
}

func TestLargeHeaders(t *testing.T) {
	pki := newPKI(t)
	up := newUpstream(t, "app", nil)
	h := newHarness(t, pki, harnessConfig{
		zone: tlsconfig.PolicySpec{Mode: tlsconfig.LogOnly, CAs: cas(pki.zoneCA), Upstream: up.url},
	})
	pad := strings.Repeat("p", 1024)
	tests := []struct {
		name   string
		kib    int
		status int
	}{
		{"20 KiB", 20, http.StatusOK},
		{"70 KiB", 70, http.StatusRequestHeaderFieldsTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := h.dial(t, clientOpts{sni: "www.example.org", cert: pki.clientZone}, "http/1.1")
			path := "/large/" + fmt.Sprint(tt.kib)
			var b strings.Builder
			fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: www.example.org\r\n", path)
			for i := range tt.kib {
				fmt.Fprintf(&b, "X-Pad-%03d: %s\r\n", i, pad)
			}
			b.WriteString("\r\n")
			if b.Len() < tt.kib<<10 {
				t.Fatalf("built only %d bytes of request", b.Len())
			}
			before := up.hits()
			// Write in the background: the proxy may answer 431 before it
			// has read everything.
			werr := make(chan error, 1)
			go func() { _, err := io.WriteString(c, b.String()); werr <- err }()
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != tt.status {
				t.Errorf("status %d, want %d", res.StatusCode, tt.status)
			}
			got := up.got(path)
			if tt.status != http.StatusOK {
				if n := up.hits() - before; len(got) != 0 || n != 0 {
					t.Errorf("upstream received %d requests, want none", n)
				}
				return
			}
			if err := <-werr; err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 {
				t.Fatalf("upstream received %d requests, want 1", len(got))
			}
			if v := got[0].Header.Get(fmt.Sprintf("X-Pad-%03d", tt.kib-1)); v != pad {
				t.Errorf("last pad header arrived with %d bytes, want %d", len(v), len(pad))
			}
		})
	}
}

// TestAcceptEncodingUntouched: the app sees Accept-Encoding exactly as the
// client sent it (none added), and a compressed answer reaches the client
// as it left the app.
func TestAcceptEncodingUntouched(t *testing.T) {
	pki := newPKI(t)
	up := newUpstream(t, "app", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Saw-Accept-Encoding", r.Header.Get("Accept-Encoding"))
		if r.Header.Get("Accept-Encoding") == "gzip" {
			w.Header().Set("Content-Encoding", "gzip")
		}
		io.WriteString(w, "body")
	})
	h := newHarness(t, pki, harnessConfig{zone: tlsconfig.PolicySpec{Mode: tlsconfig.Off, Upstream: up.url}})
	c, _ := h.client(t, clientOpts{sni: "app.example.com"})
	c.Transport.(*http.Transport).DisableCompression = true // the client sends no Accept-Encoding
	res := get(t, c, "GET", "https://app.example.com/enc", "", nil)
	if got := res.header.Get("X-Saw-Accept-Encoding"); got != "" {
		t.Errorf("app saw Accept-Encoding %q for a client that sent none", got)
	}
	res = get(t, c, "GET", "https://app.example.com/enc", "", http.Header{"Accept-Encoding": {"gzip"}})
	if res.header.Get("Content-Encoding") != "gzip" || res.body != "body" {
		t.Errorf("compressed answer altered: %q %q", res.header.Get("Content-Encoding"), res.body)
	}
}
