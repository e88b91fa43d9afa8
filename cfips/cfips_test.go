package cfips

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaultContains(t *testing.T) {
	l := Default()
	if l.Len() != 22 {
		t.Fatalf("embedded list has %d prefixes, want 22", l.Len())
	}
	cases := []struct {
		addr string
		want bool
	}{
		{"173.245.48.1", true},
		{"104.16.0.1", true},
		{"131.0.75.255", true},
		{"::ffff:162.158.1.1", true}, // IPv4-mapped, as a dual-stack listener reports it
		{"2606:4700::1111", true},
		{"2a06:98c7::1", true},
		{"8.8.8.8", false},
		{"127.0.0.1", false},
		{"2001:db8::1", false},
		{"131.0.76.0", false},
	}
	for _, tc := range cases {
		if got := l.Contains(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("Contains(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
	if !strings.Contains(l.Origin(), SnapshotDate) {
		t.Errorf("origin %q does not name the snapshot date", l.Origin())
	}
}

func TestParse(t *testing.T) {
	cases := []struct {
		name, in string
		n        int
		err      string
	}{
		{"prefixes and comments", "# test\n127.0.0.2/32 # cf\n\n10.0.0.0/8\n::1/128\n", 3, ""},
		{"bare address", "127.0.0.2\n", 1, ""},
		{"unmasked prefix", "10.1.2.3/8\n", 1, ""},
		{"garbage", "10.0.0.0/8\nnot-an-ip\n", 0, `line 2: "not-an-ip"`},
		{"empty", "# nothing\n", 0, "no address prefixes"},
	}
	for _, tc := range cases {
		l, err := Parse([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || l.Len() != tc.n {
			t.Errorf("%s: %v, len %d want %d", tc.name, err, l.Len(), tc.n)
		}
	}
	l, _ := Parse([]byte("10.1.2.3/8\n"))
	if !l.Contains(netip.MustParseAddr("10.200.0.1")) {
		t.Error("unmasked prefix not masked")
	}
}

func TestLoadNamesFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ips.txt")
	os.WriteFile(p, []byte("bogus\n"), 0o600)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("Load error %v does not name the file", err)
	}
}

func TestFetchAndShrinkGuard(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v4":
			w.Write([]byte("173.245.48.0/20\n103.21.244.0/22\n"))
		case "/v6":
			w.Write([]byte("2400:cb00::/32\n"))
		case "/html":
			w.Write([]byte("<html>maintenance</html>"))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	l, err := Fetch(ctx, srv.Client(), []string{srv.URL + "/v4", srv.URL + "/v6"})
	if err != nil || l.Len() != 3 {
		t.Fatalf("Fetch: %v, %v", l, err)
	}
	for _, bad := range []string{"/html", "/missing"} {
		if _, err := Fetch(ctx, srv.Client(), []string{srv.URL + bad}); err == nil {
			t.Errorf("Fetch %s succeeded", bad)
		}
	}
	if err := CheckShrink(Default(), l); err == nil {
		t.Error("a 3-prefix list replaced the 22-prefix one")
	}
	if err := CheckShrink(l, Default()); err != nil {
		t.Errorf("growth refused: %v", err)
	}
}
