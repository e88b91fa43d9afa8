package proxy

import (
	"net/http"
	"strings"
	"testing"

	"github.com/aopguard/aopguard/tlsconfig"
)

// FuzzRewriteHeaders: whatever headers a client sends, the app receives
// exactly aopguard's verdict headers, no client copy of them (in any case
// or with underscores), no client X-Real-IP, and, for an untrusted request
// under trust_cloudflare_headers, no CF-* or True-Client-IP.
func FuzzRewriteHeaders(f *testing.F) {
	f.Add("X-Client-Verify", "SUCCESS", "Cf-Connecting-Ip", "203.0.113.9", true, true)
	f.Add("x_client_cert_fingerprint", "forged", "CF_Visitor", "{}", true, false)
	f.Add("X-Real-Ip", "1.2.3.4", "True-Client-IP", "5.6.7.8", false, false)
	f.Add("X-CLIENT-CERT-", "", "Cf-", "", true, true)
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string, cfMode, trusted bool) {
		trusted = trusted && cfMode
		h := http.Header{}
		h[k1] = []string{v1}
		h[k2] = []string{v2}
		h["Cf-Connecting-Ip"] = append(h["Cf-Connecting-Ip"], v2)
		v := tlsconfig.Verdict{Result: tlsconfig.Failed, Reason: tlsconfig.ReasonUntrusted, Fingerprint: "ab"}
		rewriteHeaders(h, v, cfMode, trusted)
		if got := h[HeaderVerify]; len(got) != 1 || got[0] != "FAILED:untrusted" {
			t.Fatalf("X-Client-Verify = %q", got)
		}
		if got := h[HeaderFingerprint]; len(got) != 1 || got[0] != "ab" {
			t.Fatalf("fingerprint = %q", got)
		}
		for k := range h {
			if ours(k) && k != HeaderVerify && k != HeaderFingerprint {
				t.Fatalf("client header %q survived", k)
			}
			if foldEqual(k, headerRealIP) && !trusted {
				t.Fatalf("X-Real-IP %q set for an untrusted request", h[k])
			}
			if cfMode && !trusted && (hasFoldPrefix(k, "Cf-") || hasFoldPrefix(k, "Cf_") || foldEqual(k, "True-Client-Ip")) {
				t.Fatalf("%q forwarded for an untrusted request", k)
			}
		}
		if ip := h.Get(headerRealIP); ip != "" && strings.ContainsAny(ip, ", ") {
			t.Fatalf("X-Real-IP %q is not one address", ip)
		}
	})
}

// FuzzHostOnly: a Host accepted by hostOnly yields a name without a port
// that contains no colon unless it is an IPv6 address.
func FuzzHostOnly(f *testing.F) {
	for _, s := range []string{"a.b", "a.b:443", "[::1]:8443", "::1", "a:b:c", "[", "]:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		host, ok := hostOnly(in)
		if !ok {
			return
		}
		if strings.Contains(host, ":") && !strings.Contains(in, "::") && strings.Count(in, ":") < 2 {
			t.Fatalf("hostOnly(%q) = %q keeps a port", in, host)
		}
		if len(host) > len(in) {
			t.Fatalf("hostOnly(%q) = %q grew", in, host)
		}
	})
}
