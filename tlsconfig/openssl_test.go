package tlsconfig

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aopguard/aopguard/internal/testtool"
)

// TestMissingCertificateAlertOpenSSL: openssl s_client without a client
// certificate, against a Require policy, reads the alert crypto/tls sends
// (certificate_required under TLS 1.3, handshake_failure under TLS 1.2),
// and the Server reports the refusal as a RejectError with reason missing,
// which it recognizes without the client's help.
func TestMissingCertificateAlertOpenSSL(t *testing.T) {
	t.Parallel()
	openssl := testtool.Path(t, "openssl")
	f := getFixture(t)
	set := mustSet(t, PolicySpec{Mode: Require, CAs: caList(f.zoneCA)}, nil, mustTickets(t), nil)
	for _, tt := range []struct {
		version string
		alert   string
	}{
		{"-tls1_3", "alert certificate required"},
		{"-tls1_2", "alert handshake failure"},
	} {
		t.Run(tt.version, func(t *testing.T) {
			h := newHarness(t, set, ServerOptions{})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// -ign_eof: keep reading after stdin ends, so the TLS 1.3
			// alert (sent after the client's Finished) is read.
			cmd := exec.CommandContext(ctx, openssl, "s_client", "-connect", h.ln.Addr().String(),
				"-servername", "a.example.com", tt.version, "-ign_eof")
			out, _ := cmd.CombinedOutput()
			if !strings.Contains(string(out), tt.alert) {
				t.Errorf("openssl s_client output lacks %q:\n%s", tt.alert, out)
			}
			obs := h.next()
			var rej *RejectError
			if !errors.As(obs.err, &rej) || rej.Verdict.Reason != ReasonMissing {
				t.Errorf("Server reported %v, want a RejectError with reason %s", obs.err, ReasonMissing)
			}
			h.noneAccepted()
		})
	}
}
