package check

import (
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
)

// Expectation texts, shown in the EXPECTED column.
const (
	expRefused     = "refused (TLS alert, or HTTP 4xx)"
	expAdmitted    = "let through (an HTTP answer, not a refusal)"
	expNoSwitch    = "not let through to the other host (TLS refusal, 421 or 4xx)"
	expAnyHTTP     = "an HTTP answer (any status)"
	expClientCert  = "let through (an HTTP answer from the app, not 421)"
	certWordInBody = "certificate"
)

// judge fills in p.Expected, p.Pass and p.Note. ref is the client-cert
// probe's answer for the same host (nil when there is none); base is, for
// the host-switch probe, how the other host answers the same certificate
// on a connection of its own.
func (r *runner) judge(p *Probe, a, ref, base *answer) {
	if a.outcome == Error {
		p.Expected = r.expected(p.Name)
		p.Pass = false
		p.Note = "the probe could not be judged: " + a.detail
		return
	}
	p.Expected = r.expected(p.Name)
	switch {
	case p.Name == ClientCert:
		p.Pass = admitted(a)
		switch {
		case a.outcome == TLSRefused:
			p.Note = "the certificate uploaded to Cloudflare was refused: Cloudflare would be locked out"
		case a.status == 421:
			p.Note = "421 Misdirected Request: the origin does not accept this certificate for this host"
		case !p.Pass:
			p.Note = "the answer mentions a certificate: the origin does not accept the one uploaded to Cloudflare"
		}
	case r.o.Expect == ExpectRequire && p.Name == HostSwitch:
		refusedHere, why := refused(a, nil)
		switch {
		case refusedHere:
			p.Pass, p.Note = true, why
		case base != nil && base.outcome == Error:
			p.Pass = false
			p.Note = fmt.Sprintf("answered over %s's connection; could not tell whether %s accepts this certificate on a connection of its own: %s", p.SNI, p.HostHeader, base.detail)
		case base != nil && admitted(base):
			p.Pass = true
			p.Note = fmt.Sprintf("%s accepts this certificate on a connection of its own, so reaching it over %s's connection bypasses nothing", p.HostHeader, p.SNI)
		default:
			p.Pass = false
			p.Note = fmt.Sprintf("%s refuses this certificate on a connection of its own, but answered a request sent over %s's connection: a Host header bypasses its client-certificate check", p.HostHeader, p.SNI)
		}
	case r.o.Expect == ExpectRequire:
		// direct-ip, no-cert, untrusted-cert.
		var why string
		p.Pass, why = refused(a, ref)
		if p.Pass {
			p.Note = why
		} else if why != "" {
			p.Note = why
		} else {
			p.Note = "the origin let this in: client certificates are not enforced here"
		}
	case p.Name == HostSwitch:
		// log-only: informational; any HTTP answer will do.
		p.Pass = a.outcome == HTTP
		if !p.Pass {
			p.Note = "refused at TLS although nothing should be refused yet"
		}
	default:
		// log-only: direct-ip, no-cert, untrusted-cert get through.
		isRefused, why := refused(a, ref)
		p.Pass = a.outcome == HTTP && !isRefused
		if !p.Pass {
			p.Note = "refused although nothing should be refused yet (log-only)"
			if why != "" {
				p.Note += ": " + why
			}
		}
	}
}

func (r *runner) expected(name string) string {
	switch {
	case name == ClientCert:
		return expClientCert
	case r.o.Expect == ExpectRequire && name == HostSwitch:
		return expNoSwitch
	case r.o.Expect == ExpectRequire:
		return expRefused
	case name == HostSwitch:
		return expAnyHTTP
	}
	return expAdmitted
}

// certAnswer reports an HTTP answer that is itself a certificate refusal:
// 421, or a 4xx whose body talks about a certificate (nginx's 400 "No
// required SSL certificate was sent" and "The SSL certificate error").
func certAnswer(a *answer) bool {
	if a.outcome != HTTP {
		return false
	}
	if a.status == 421 {
		return true
	}
	return a.status >= 400 && a.status < 500 && strings.Contains(strings.ToLower(a.body), certWordInBody)
}

// admitted reports an HTTP answer that is not a certificate refusal.
func admitted(a *answer) bool { return a.outcome == HTTP && !certAnswer(a) }

// refused reports whether a is a refusal, and why. A 4xx answer counts as
// one, except when ref (the same request with the client certificate) got
// the very same status: then it is the app's answer, and the certificate
// made no difference.
func refused(a, ref *answer) (bool, string) {
	switch a.outcome {
	case TLSRefused:
		if a.alert != "" {
			return true, ""
		}
		return true, "the origin closed the connection without an HTTP answer or a TLS alert; counted as refused"
	case HTTP:
	default:
		return false, ""
	}
	switch {
	case a.status == 421:
		return true, "421 Misdirected Request"
	case certAnswer(a):
		return true, fmt.Sprintf("HTTP %d about the certificate counts as refused (nginx's way)", a.status)
	case a.status >= 400 && a.status < 500:
		if ref != nil && ref.outcome == HTTP && ref.status == a.status {
			return false, fmt.Sprintf("HTTP %d, the same answer as with the client certificate: the app answered, the certificate made no difference (use --path for a URL the app answers with 2xx)", a.status)
		}
		return true, fmt.Sprintf("HTTP %d counts as refused", a.status)
	}
	return false, ""
}

// alertNames are the RFC 8446 (and RFC 5246) names of TLS alerts.
var alertNames = map[uint8]string{
	0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 21: "decryption_failed",
	22: "record_overflow", 30: "decompression_failure", 40: "handshake_failure", 42: "bad_certificate",
	43: "unsupported_certificate", 44: "certificate_revoked", 45: "certificate_expired",
	46: "certificate_unknown", 47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied",
	50: "decode_error", 51: "decrypt_error", 60: "export_restriction", 70: "protocol_version",
	71: "insufficient_security", 80: "internal_error", 86: "inappropriate_fallback",
	90: "user_canceled", 100: "no_renegotiation", 109: "missing_extension",
	110: "unsupported_extension", 111: "certificate_unobtainable", 112: "unrecognized_name",
	113: "bad_certificate_status_response", 114: "bad_certificate_hash_value",
	115: "unknown_psk_identity", 116: "certificate_required", 120: "no_application_protocol",
	121: "ech_required",
}

// alertByText maps crypto/tls's alert texts ("tls: certificate required")
// to alert codes, for errors that lost their type.
var alertByText = func() map[string]uint8 {
	m := map[string]uint8{}
	for code := range alertNames {
		m[tlsAlertText(code)] = code
	}
	return m
}()

// AlertName returns the RFC name of the TLS alert the peer sent, when err
// carries one: crypto/tls reports it as a *net.OpError with Op "remote
// error" (its text is "remote error: tls: certificate required").
func AlertName(err error) (string, bool) {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" || op.Err == nil {
		return "", false
	}
	if v := reflect.ValueOf(op.Err); v.Kind() == reflect.Uint8 {
		return alertName(uint8(v.Uint())), true
	}
	if code, ok := alertByText[op.Err.Error()]; ok {
		return alertName(code), true
	}
	return strings.TrimPrefix(op.Err.Error(), "tls: "), true
}

func alertName(code uint8) string {
	if n, ok := alertNames[code]; ok {
		return n
	}
	return fmt.Sprintf("alert_%d", code)
}
