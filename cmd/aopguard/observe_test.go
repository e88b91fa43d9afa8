package main

import (
	"crypto/x509"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/aopguard/aopguard/certs"
	"github.com/aopguard/aopguard/cfips"
	"github.com/aopguard/aopguard/internal/testpki"
	"github.com/aopguard/aopguard/metrics"
)

// TestClientLeavesBounded: at most maxClientLeaves per host are reported;
// dropping the oldest keeps the series of a newer leaf with its subject.
func TestClientLeavesBounded(t *testing.T) {
	m := metrics.New()
	cl := &clientLeaves{metrics: m, byHost: map[string][]clientLeaf{}, onNew: func(string, string, *x509.Certificate) {}}
	ca := testpki.CA(t, "ca")
	first := testpki.Client(t, ca, "edge")
	renewed := testpki.Client(t, ca, "edge") // the renewal keeps the subject
	cl.seen("h", first.Cert, certs.Fingerprint(first.Cert.Raw), cfips.Other)
	cl.seen("h", renewed.Cert, certs.Fingerprint(renewed.Cert.Raw), cfips.Other)
	for i := 0; i < maxClientLeaves-1; i++ { // the last one pushes first out
		leaf := testpki.Client(t, ca, "other "+string(rune('a'+i)))
		cl.seen("h", leaf.Cert, certs.Fingerprint(leaf.Cert.Raw), cfips.Other)
	}
	series := `aopguard_certificate_expiry_timestamp_seconds`
	if n := testutil.CollectAndCount(m.Registry, series); n != maxClientLeaves {
		t.Fatalf("%d client series, want %d", n, maxClientLeaves)
	}
	if len(cl.byHost["h"]) != maxClientLeaves {
		t.Fatalf("%d leaves kept", len(cl.byHost["h"]))
	}
}
