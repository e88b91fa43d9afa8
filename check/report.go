package check

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"text/tabwriter"
)

func tlsAlertText(code uint8) string { return tls.AlertError(code).Error() }

// untrustedCertCmd makes a throwaway self-signed client certificate for
// reproducing the untrusted-cert probe by hand.
const untrustedCertCmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 " +
	"-subj /CN=aopguard-check-untrusted -addext extendedKeyUsage=clientAuth " +
	"-keyout untrusted.key -out untrusted.pem 2>/dev/null && "

// curl renders the curl command equivalent to an attempt: --resolve (or
// --connect-to, for an origin given by name) pins the hostname to the
// origin so that curl sends it as SNI; -H 'Host: ...' when the Host header
// differs; --cert/--key for a certificate; -k or --cacert as the options
// say. Probe 1 always uses -k: a direct-to-IP request has no name whose
// certificate could be checked.
func (r *runner) curl(at attempt) string {
	host, port, _ := net.SplitHostPort(r.origin)
	args := []string{"curl", "-i"}
	switch {
	case r.o.Insecure || at.sni == "":
		args = append(args, "-k")
	case r.o.CAFile != "":
		args = append(args, "--cacert", r.o.CAFile)
	}
	target := r.origin
	if at.sni != "" {
		if net.ParseIP(host) != nil {
			addr := host
			if strings.Contains(host, ":") {
				addr = "[" + host + "]"
			}
			args = append(args, "--resolve", at.sni+":"+port+":"+addr)
		} else {
			args = append(args, "--connect-to", at.sni+":"+port+":"+host+":"+port)
		}
		target = net.JoinHostPort(at.sni, port)
	}
	if port == "443" {
		target = strings.TrimSuffix(target, ":443")
	}
	if at.sni != "" && at.host != at.sni {
		args = append(args, "-H", "Host: "+at.host)
	}
	prefix := ""
	switch at.cert {
	case "client":
		args = append(args, "--cert", r.o.ClientCertFile, "--key", r.o.ClientKeyFile)
	case "untrusted":
		prefix = untrustedCertCmd
		args = append(args, "--cert", "untrusted.pem", "--key", "untrusted.key")
	}
	args = append(args, "https://"+target+r.o.Path)
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = shellQuote(a)
	}
	return prefix + strings.Join(quoted, " ")
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("@%+=:,./-_", c)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// WriteJSON writes the report as one indented JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("writing JSON report: %w", err)
	}
	return nil
}

// WriteText writes the report for people: a table of probes, then each
// probe's curl command and the reasons behind its verdict, then a summary.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "aopguard check: origin %s, expecting %s\n\n", r.Origin, r.Expect)
	tw := tabwriter.NewWriter(&b, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tPROBE\tSNI\tHOST HEADER\tCERT\tRESULT\tEXPECTED\tVERDICT")
	for _, p := range r.Probes {
		sni := p.SNI
		if sni == "" {
			sni = "(none)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Number, p.Name, sni, p.HostHeader, p.Cert, p.Result(), p.Expected, verdict(p.Pass))
	}
	tw.Flush()
	b.WriteString("\nDetails, and how to reproduce each probe by hand:\n")
	for _, p := range r.Probes {
		fmt.Fprintf(&b, "\n%d %s", p.Number, p.Name)
		if p.Host != "" {
			fmt.Fprintf(&b, " (%s)", p.Host)
		}
		fmt.Fprintf(&b, ": %s\n", verdict(p.Pass))
		if p.Detail != "" {
			fmt.Fprintf(&b, "  got:  %s — %s\n", p.Result(), p.Detail)
		} else {
			fmt.Fprintf(&b, "  got:  %s\n", p.Result())
		}
		if p.Note != "" {
			fmt.Fprintf(&b, "  why:  %s\n", p.Note)
		}
		fmt.Fprintf(&b, "  curl: %s\n", p.Curl)
	}
	if len(r.Notes) > 0 {
		b.WriteString("\nNotes:\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "  - %s\n", n)
		}
	}
	failed := r.Failed()
	if r.Pass {
		fmt.Fprintf(&b, "\nPASS: all %d probes met the expectation (%s).\n", len(r.Probes), r.Expect)
	} else {
		var names []string
		for _, p := range failed {
			n := fmt.Sprintf("%d %s", p.Number, p.Name)
			if p.Host != "" {
				n += " (" + p.Host + ")"
			}
			names = append(names, n)
		}
		fmt.Fprintf(&b, "\nFAIL: %d of %d probes did not meet the expectation (%s): %s.\n", len(failed), len(r.Probes), r.Expect, strings.Join(names, ", "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func verdict(pass bool) string {
	if pass {
		return "PASS"
	}
	return "FAIL"
}
