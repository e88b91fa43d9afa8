package tlsconfig

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func mustKey(t *testing.T) [TicketKeyBytes]byte {
	t.Helper()
	k, err := NewTicketKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sharedKeys(t *testing.T, keys ...[TicketKeyBytes]byte) *TicketKeys {
	t.Helper()
	k, err := SharedTicketKeys(keys)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestParseTicketKeys(t *testing.T) {
	k1, k2 := mustKey(t), mustKey(t)
	b64 := func(k [TicketKeyBytes]byte) string { return base64.StdEncoding.EncodeToString(k[:]) }
	tests := []struct {
		name string
		in   string
		want [][TicketKeyBytes]byte
		line int    // error line; -1 no error
		msg  string // error text
	}{
		{"as written", string(FormatTicketKeys([][TicketKeyBytes]byte{k1, k2})), [][TicketKeyBytes]byte{k1, k2}, -1, ""},
		{"comments, blanks, CRLF", "# keys\r\n\r\n  " + b64(k2) + "  \r\n", [][TicketKeyBytes]byte{k2}, -1, ""},
		{"empty", "# nothing\n\n", nil, 0, "no session ticket keys"},
		{"not base64", b64(k1) + "\nnot-a-key!\n", nil, 2, "not a base64 key of 32 bytes"},
		{"short key", base64.StdEncoding.EncodeToString(k1[:16]) + "\n", nil, 1, "not a base64 key of 32 bytes"},
		{"duplicate", b64(k1) + "\n" + b64(k2) + "\n" + b64(k1) + "\n", nil, 3, "the same key as line 1"},
		{"too many", func() string {
			var b strings.Builder
			for range MaxTicketKeys + 1 {
				k := mustKey(t)
				b.WriteString(b64(k) + "\n")
			}
			return b.String()
		}(), nil, MaxTicketKeys + 1, "more than 16 keys"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTicketKeys([]byte(tt.in))
			if tt.line < 0 {
				if err != nil || len(got) != len(tt.want) {
					t.Fatalf("got %d keys, %v", len(got), err)
				}
				for i := range got {
					if got[i] != tt.want[i] {
						t.Errorf("key %d differs", i)
					}
				}
				return
			}
			var ke *TicketKeyError
			if !errors.As(err, &ke) || ke.Line != tt.line || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("error %v, want line %d %q", err, tt.line, tt.msg)
			}
			// An error never shows key material.
			for _, l := range strings.Split(tt.in, "\n") {
				if l = strings.TrimSpace(l); len(l) > 8 && !strings.HasPrefix(l, "#") && strings.Contains(err.Error(), l) {
					t.Errorf("error %q shows a key line", err)
				}
			}
		})
	}
	if !bytes.HasPrefix(FormatTicketKeys(nil), []byte("# aopguard session ticket keys")) {
		t.Error("a key file does not say what it is")
	}
}

// TestSharedTicketKeys: servers that read the same keys resume each
// other's sessions; the first key encrypts and the others decrypt; other
// keys, or the process's own, do not resume; tickets still never cross
// policies.
func TestSharedTicketKeys(t *testing.T) {
	t.Parallel()
	f := getFixture(t)
	zone := PolicySpec{Mode: Require, CAs: caList(f.zoneCA)}
	hosts := []PolicySpec{
		{Name: "a.example.com", Mode: Require, CAs: caList(f.zoneCA)},
		{Name: "b.example.com", Mode: Require, CAs: caList(f.zoneCA)},
	}
	leaf := tlsCert(f.zoneLeaf)
	k1, k2 := mustKey(t), mustKey(t)
	for _, ver := range versions {
		t.Run(ver.name, func(t *testing.T) {
			t.Parallel()
			server := func(keys *TicketKeys) *harness {
				return newHarness(t, mustSet(t, zone, hosts, keys, nil), ServerOptions{})
			}
			processKeys := mustTickets(t)
			a1, a2 := server(sharedKeys(t, k1)), server(sharedKeys(t, k1))
			rotated := server(sharedKeys(t, k2, k1)) // after the file was rotated
			onlyNew := server(sharedKeys(t, k2))
			own := server(processKeys)

			// issue gets a ticket for name from h into a fresh cache.
			issue := func(h *harness, name string) tls.ClientSessionCache {
				cache := tls.NewLRUClientSessionCache(4)
				if st, _ := h.admitted(withCache(clientConfig(t, ver.v, name, leaf), cache)); st.DidResume {
					t.Fatal("first connection resumed")
				}
				return cache
			}
			resumes := func(h *harness, cfg *tls.Config) bool {
				st, info := h.admitted(cfg)
				if st.DidResume != info.Resumed {
					t.Fatalf("client resumed %v, server %v", st.DidResume, info.Resumed)
				}
				return st.DidResume
			}
			steps := []struct {
				name string
				from *harness
				to   *harness
				want bool
			}{
				{"same file, other instance", a1, a2, true},
				{"rotated file decrypts with the old key", a1, rotated, true},
				{"rotated file encrypts with the new key", rotated, onlyNew, true},
				{"new key alone does not read old tickets", a1, onlyNew, false},
				{"old key alone does not read new tickets", rotated, a2, false},
				{"process keys do not read shared tickets", a1, own, false},
				{"shared keys do not read process tickets", own, a1, false},
			}
			for _, s := range steps {
				cache := issue(s.from, "a.example.com")
				if got := resumes(s.to, withCache(clientConfig(t, ver.v, "a.example.com", leaf), cache)); got != s.want {
					t.Errorf("%s: resumed %v, want %v", s.name, got, s.want)
				}
			}
			// Another policy on an instance with the same keys.
			cache := issue(a1, "a.example.com")
			if resumes(a2, withCache(clientConfig(t, ver.v, "b.example.com", leaf), sessionRedirect{cache, "a.example.com", "b.example.com"})) {
				t.Error("a ticket issued under a.example.com resumed under b.example.com on another instance")
			}
			// The daily rotation of process keys leaves shared keys alone.
			if err := processKeys.Rotate(); err != nil {
				t.Fatal(err)
			}
			a2.cur.Load().RefreshTicketKeys(processKeys)
			if !resumes(a2, withCache(clientConfig(t, ver.v, "a.example.com", leaf), issue(a1, "a.example.com"))) {
				t.Error("rotating the process's keys changed a shared-key set")
			}
		})
	}
}
