package tlsconfig

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/aopguard/aopguard/internal/testpki"
)

// FuzzAllowRules: hash parsing accepts exactly 32 bytes in hex or base64,
// and a leaf matches a rule set built from its own properties and from
// the fuzzed input exactly when one of the rules is its own.
func FuzzAllowRules(f *testing.F) {
	ca := testpki.CA(f, "fuzz CA")
	leaf := testpki.New(f, ca, testpki.Options{CN: "edge.example.net", DNS: []string{"origin.example.net"}})
	own := sha256.Sum256(leaf.Cert.Raw)
	f.Add(hex.EncodeToString(own[:]), "edge.example.net", "origin.example.net")
	f.Add("9A:1A:C2", "EDGE.example.net", "ORIGIN.EXAMPLE.NET")
	f.Add("mhrCtL4V+fJ+7iCnNMuk6YmPYQAbO9fIS2m1aj4lork=", "", "example.net")
	f.Fuzz(func(t *testing.T, hash, cn, dns string) {
		var r AllowRules
		if h, err := ParseHash(hash); err == nil {
			clean := strings.ReplaceAll(strings.TrimSpace(hash), ":", "")
			if len(clean) != 64 && len(strings.TrimSpace(hash)) != 44 {
				t.Fatalf("ParseHash(%q) accepted an input of the wrong length", hash)
			}
			r.SHA256 = append(r.SHA256, h)
		}
		if cn != "" {
			r.CN = append(r.CN, cn)
		}
		if dns != "" {
			r.DNS = append(r.DNS, dns)
		}
		want := r.Empty() ||
			(len(r.SHA256) > 0 && r.SHA256[0] == own) ||
			cn == "edge.example.net" ||
			strings.EqualFold(dns, "origin.example.net")
		if got := r.Match(leaf.Cert); got != want {
			t.Fatalf("Match(%+v) = %v, want %v", r, got, want)
		}
	})
}
