package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/aopguard/aopguard/internal/testpki"
)

// TestCertmagicLogsOneFlatLine: certmagic's own warning (a certificate
// about to expire, cached for real) arrives as one JSON line of aopguard's
// log, its fields at the top level, not a document nested in another.
func TestCertmagicLogsOneFlatLine(t *testing.T) {
	var buf bytes.Buffer
	s, err := newServerCerts(newLogger(&buf, zerolog.InfoLevel), nil, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	ca := testpki.CA(t, "server CA")
	soon := testpki.New(t, ca, testpki.Options{CN: "soon.example.com", DNS: []string{"soon.example.com"}, NotAfter: time.Now().Add(time.Hour)})
	pair, err := tls.X509KeyPair(soon.CertPEM(), soon.KeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.replace([]tls.Certificate{pair}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var found int
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not one JSON document per line: %q: %v", l, err)
		}
		if m["message"] != "unmanaged certificate expires within 1 day" {
			continue
		}
		found++
		sans, _ := m["sans"].([]any)
		if m["level"] != "warn" || m["component"] != "certmagic" || len(sans) != 1 || sans[0] != "soon.example.com" || m["not_after"] == nil || m["time"] == nil {
			t.Errorf("certmagic line not flat, or fields missing: %s", l)
		}
		for k, v := range m {
			if _, nested := v.(map[string]any); nested {
				t.Errorf("field %s is a nested document: %s", k, l)
			}
		}
	}
	if found != 1 {
		t.Errorf("%d certmagic expiry lines, want 1:\n%s", found, buf.String())
	}
}

// TestZapCoreLevelsAndFields: levels map onto zerolog's, entries below the
// minimum are dropped, and With fields are carried.
func TestZapCoreLevelsAndFields(t *testing.T) {
	var buf bytes.Buffer
	newLogger(io.Discard, zerolog.InfoLevel) // aopguard's zerolog settings: durations in ms
	l := newZapLogger(zerolog.New(&buf), "certmagic", zapcore.InfoLevel).With(zap.String("issuer", "acme"))
	l.Debug("dropped")
	l.Info("obtained", zap.Strings("identifiers", []string{"a.example.com"}))
	l.Error("failed", zap.Error(errors.New("boom")), zap.Duration("retry_in", time.Minute))
	want := []string{
		`{"level":"info","component":"certmagic","identifiers":["a.example.com"],"issuer":"acme","message":"obtained"}`,
		`{"level":"error","component":"certmagic","error":"boom","issuer":"acme","retry_in":60000,"message":"failed"}`,
	}
	if got := strings.Split(strings.TrimSpace(buf.String()), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
