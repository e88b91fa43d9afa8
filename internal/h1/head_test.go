package h1

import (
	"strings"
	"testing"
)

func TestHeaderValue(t *testing.T) {
	long := strings.Repeat("a", 2000)
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{"a\r\nb", "a  b"},
		{"a\nInjected: 1", "a Injected: 1"},
		{"a\rb", "a b"},
		{long, long},
		{long + "\n", long + " "},
		{"\r" + long, " " + long},
	} {
		if got := headerValue(tc.in); got != tc.want {
			t.Errorf("headerValue(%.20q) = %.20q, want %.20q", tc.in, got, tc.want)
		}
	}
}

// BenchmarkHeaderValue checks a value of the size of a forwarded client
// certificate, the longest header aopguard writes on every request.
func BenchmarkHeaderValue(b *testing.B) {
	v := strings.Repeat("MIIDdzCCAl+gAwIBAgIE", 80)
	b.ReportAllocs()
	for b.Loop() {
		if headerValue(v) != v {
			b.Fatal("changed")
		}
	}
}
