package config

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParse: any input either parses into a configuration that validates,
// or fails with an *Error naming the file; it never panics.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"upstream: http://127.0.0.1:8080\n",
		"upstream: http://127.0.0.1:8080\nmode: log-only\nhosts:\n  - name: a.example.com\n    ca: a.pem\n    allow:\n      cn: [x]\n",
		"upstream: unix:///run/app.sock\ncloudflare_ips_refresh:\n  urls: [https://www.cloudflare.com/ips-v4]\n  interval: 1h\n",
		"---\n",
		"hosts: [&a {name: x}, *a]\n",
		"upstream: [\n",
		"a: &a [*a, *a]\nupstream: http://x\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		c, err := Parse([]byte(in), "fuzz.yaml", "/etc/aopguard")
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || ce.File != "fuzz.yaml" || !strings.HasPrefix(err.Error(), "fuzz.yaml: ") {
				t.Fatalf("error %T %q does not name the file", err, err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a configuration that does not validate: %v", err)
		}
	})
}
