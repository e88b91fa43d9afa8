package certs

import (
	"testing"
)

// FuzzParseBundle: any input yields certificates or an error, never a
// panic, and never an empty success.
func FuzzParseBundle(f *testing.F) {
	f.Add(CloudflareOriginPullPEM())
	f.Add(append(CloudflareOriginPullPEM(), CloudflareOriginPullPEM()...))
	f.Add(CloudflareOriginPullPEM()[:400])
	f.Add([]byte("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, in []byte) {
		cs, err := ParseBundle(in)
		if err != nil {
			return
		}
		if len(cs) == 0 {
			t.Fatal("success with no certificate")
		}
		for _, c := range cs {
			if c == nil || len(c.Raw) == 0 {
				t.Fatal("nil certificate in a successful parse")
			}
		}
	})
}
