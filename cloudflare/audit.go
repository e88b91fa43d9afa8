package cloudflare

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aopguard/aopguard/certs"
	"github.com/aopguard/aopguard/tlsconfig"
)

// Verdicts of an audit row.
const (
	// OK: Cloudflare presents what the local policy accepts (or presents
	// nothing to a policy that is off).
	OK = "ok"
	// WillBreak: the local policy is require and refuses what Cloudflare
	// presents, or Cloudflare presents nothing: an outage.
	WillBreak = "will_break"
	// WouldBreak: the same under log-only: not safe to enforce yet.
	WouldBreak = "would_break"
	// Unprotected: Cloudflare presents a certificate but the local policy
	// is off, so nothing checks it.
	Unprotected = "unprotected"
)

// Expiry states of the certificate a row presents: Cloudflare's own
// alerts fire 30 and 14 days ahead.
const (
	ExpiryOK      = "ok"
	ExpiryWarn30  = "expires_within_30_days"
	ExpiryWarn14  = "expires_within_14_days"
	ExpiryExpired = "expired"
	ExpiryUnknown = "unknown"
)

// Row is the audit of one hostname (or, for the zone policy, of every
// hostname no host policy names).
type Row struct {
	// Policy is the local policy serving the hostname ("_zone" or a
	// configured host, possibly a wildcard).
	Policy string `json:"policy"`
	Mode   string `json:"mode"`
	// Hostname is the Cloudflare hostname; "*" for the zone policy's row.
	Hostname string `json:"hostname"`
	// Unnamed is true for a hostname with per-hostname AOP at Cloudflare
	// that the config does not name: it falls to the zone policy.
	Unnamed bool `json:"unnamed,omitempty"`
	// Level is where the certificate Cloudflare presents comes from.
	Level       Level      `json:"level"`
	CertID      string     `json:"cert_id,omitempty"`
	Status      string     `json:"status,omitempty"`
	Fingerprint string     `json:"fingerprint,omitempty"`
	Subject     string     `json:"subject,omitempty"`
	NotAfter    *time.Time `json:"not_after,omitempty"`
	DaysLeft    *int       `json:"days_left,omitempty"`
	Expiry      string     `json:"expiry"`
	// Trusted says whether the presented certificate chains to a CA the
	// local policy trusts (and passes its other checks); TrustReason is
	// the policy's reason when not.
	Trusted     bool   `json:"trusted"`
	TrustReason string `json:"trust_reason,omitempty"`
	Verdict     string `json:"verdict"`
	Why         string `json:"why"`
}

// Report is an audit of one zone.
type Report struct {
	Zone      string    `json:"zone"`
	Generated time.Time `json:"generated"`
	Global    bool      `json:"global_aop"`
	ZoneLevel bool      `json:"zone_level_aop"`
	Rows      []Row     `json:"rows"`
	Notes     []string  `json:"notes,omitempty"`
}

// Breaks reports whether any row is will_break.
func (r Report) Breaks() bool {
	for _, row := range r.Rows {
		if row.Verdict == WillBreak {
			return true
		}
	}
	return false
}

// Audit judges what Cloudflare will present for every local policy, and
// for every hostname with per-hostname AOP, against set: the policies
// aopguard builds from its configuration. Names map to policies exactly
// as aopguard's handshakes do (Set.Match), and certificates are checked
// by the policy's own verification.
func Audit(st *State, set *tlsconfig.Set, now time.Time) Report {
	rep := Report{Zone: st.ZoneID, Generated: now.UTC(), Global: st.Global, ZoneLevel: st.ZoneLevel, Notes: st.Notes}
	rep.Rows = append(rep.Rows, judge(st, set.Zone(), "*", nil, false, now))
	named := map[string]bool{}
	for _, p := range set.Policies()[1:] {
		name := strings.ToLower(p.Name())
		named[name] = true
		var h *Hostname
		if x, ok := st.Hostnames[name]; ok {
			h = &x
		}
		rep.Rows = append(rep.Rows, judge(st, p, p.Name(), h, false, now))
	}
	// Other hostnames: proxied names a wildcard policy serves, and names
	// with per-hostname AOP that fall to the zone policy.
	for _, name := range sortedKeys(st.Hostnames, st.Proxied) {
		if named[name] {
			continue
		}
		p := set.Match(name)
		var h *Hostname
		if x, ok := st.Hostnames[name]; ok {
			h = &x
		}
		switch {
		case p != set.Zone():
			rep.Rows = append(rep.Rows, judge(st, p, name, h, false, now))
		case h != nil:
			rep.Rows = append(rep.Rows, judge(st, p, name, h, true, now))
		}
	}
	return rep
}

func sortedKeys(m map[string]Hostname, more []string) []string {
	seen := map[string]bool{}
	var out []string
	for k := range m {
		seen[k] = true
		out = append(out, k)
	}
	for _, k := range more {
		k = strings.ToLower(strings.TrimSuffix(k, "."))
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// judge computes one row: the level Cloudflare presents from (per-hostname
// when h is enabled, nothing when h is disabled, else zone-level, else
// global), and the verdict of p on it.
func judge(st *State, p *tlsconfig.Policy, hostname string, h *Hostname, unnamed bool, now time.Time) Row {
	row := Row{Policy: p.Name(), Mode: p.Mode().String(), Hostname: hostname, Unnamed: unnamed, Level: LevelNone, Expiry: ExpiryUnknown}
	var cert *Cert
	switch zc := st.ZoneCert(); {
	case h != nil && h.Enabled:
		row.Level, cert = LevelHostname, &h.Cert
		row.Status = h.Status
		if h.Cert.Status != "" && h.Cert.Status != "active" {
			row.Status = h.Status + " (certificate " + h.Cert.Status + ")"
		}
	case h != nil:
		row.Status = "disabled for this hostname"
	case zc != nil:
		row.Level, cert = LevelZone, zc
		row.Status = zc.Status
	case st.Global:
		row.Level = LevelGlobal
		row.Status = "active"
	}
	switch {
	case cert != nil:
		row.CertID, row.Fingerprint = cert.ID, cert.Fingerprint
		if !cert.ExpiresOn.IsZero() {
			t := cert.ExpiresOn.UTC()
			row.NotAfter = &t
			days := int(t.Sub(now).Hours() / 24)
			row.DaysLeft = &days
			row.Expiry = expiry(t, now)
		}
		if len(cert.Chain) == 0 {
			row.TrustReason = "Cloudflare returned no certificate that parses"
			break
		}
		row.Subject = certs.Describe(cert.Chain[0])
		if p.Mode() == tlsconfig.Off {
			break
		}
		v := p.Verify(cert.Chain)
		row.Trusted, row.TrustReason = v.Result == tlsconfig.Success, v.Reason
	case row.Level == LevelGlobal:
		// Cloudflare's shared leaf is not published; its CA is embedded.
		ca := certs.CloudflareOriginPullCA()
		row.Subject = "Cloudflare's shared origin-pull certificate"
		t := ca.NotAfter.UTC()
		row.NotAfter = &t
		days := int(t.Sub(now).Hours() / 24)
		row.DaysLeft = &days
		row.Expiry = expiry(t, now)
		for _, c := range p.CAs() {
			row.Trusted = row.Trusted || c.Equal(ca)
		}
		if !row.Trusted && p.Mode() != tlsconfig.Off {
			row.TrustReason = tlsconfig.ReasonUntrusted
		}
	}
	row.Verdict, row.Why = verdict(p.Mode(), row)
	return row
}

func expiry(notAfter, now time.Time) string {
	left := notAfter.Sub(now)
	switch days := int(left.Hours() / 24); {
	case left <= 0:
		return ExpiryExpired
	case days < 14:
		return ExpiryWarn14
	case days < 30:
		return ExpiryWarn30
	}
	return ExpiryOK
}

func verdict(mode tlsconfig.Mode, row Row) (string, string) {
	bad := WillBreak
	if mode == tlsconfig.LogOnly {
		bad = WouldBreak
	}
	switch {
	case mode == tlsconfig.Off && row.Level != LevelNone:
		return Unprotected, fmt.Sprintf("Cloudflare presents a %s certificate but the local policy is off: nothing checks it", row.Level)
	case mode == tlsconfig.Off:
		return OK, "no AOP at Cloudflare and the local policy is off"
	case row.Level == LevelNone && row.Status != "":
		return bad, fmt.Sprintf("per-hostname AOP is disabled for this hostname, so Cloudflare presents no client certificate (whatever the zone-level and global settings), and the local policy is %s", mode)
	case row.Level == LevelNone:
		return bad, fmt.Sprintf("Cloudflare presents no client certificate for this hostname, and the local policy is %s", mode)
	case !row.Trusted:
		return bad, fmt.Sprintf("the local policy (%s) refuses the %s certificate Cloudflare presents: %s", mode, row.Level, row.TrustReason)
	}
	return OK, fmt.Sprintf("the local policy (%s) accepts the %s certificate Cloudflare presents", mode, row.Level)
}

// WriteJSON writes the report as indented JSON.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report as a table, then the reason for every row
// that is not ok and every expiry warning.
func (r Report) WriteTable(w io.Writer) error {
	onOff := map[bool]string{true: "on", false: "off"}
	fmt.Fprintf(w, "Cloudflare AOP audit of zone %s, %s (global: %s, zone-level: %s)\n\n",
		r.Zone, r.Generated.Format(time.RFC3339), onOff[r.Global], onOff[r.ZoneLevel])
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOSTNAME\tPOLICY\tMODE\tLEVEL\tSTATUS\tEXPIRES\tTRUSTED\tVERDICT")
	for _, row := range r.Rows {
		exp := "-"
		if row.NotAfter != nil {
			exp = fmt.Sprintf("%s (%dd)", row.NotAfter.Format("2006-01-02"), *row.DaysLeft)
		}
		trusted := "no"
		if row.Trusted {
			trusted = "yes"
		}
		if row.Level == LevelNone || row.Mode == tlsconfig.Off.String() {
			trusted = "-"
		}
		status := row.Status
		if status == "" {
			status = "-"
		}
		host := row.Hostname
		if row.Unnamed {
			host += " (not in config)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", host, row.Policy, row.Mode, row.Level, status, exp, trusted, row.Verdict)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, row := range r.Rows {
		if row.Verdict != OK {
			fmt.Fprintf(w, "\n%s: %s — %s", row.Hostname, row.Verdict, row.Why)
		}
		switch row.Expiry {
		case ExpiryExpired:
			fmt.Fprintf(w, "\nERROR %s: the %s certificate %s has expired (%s)", row.Hostname, row.Level, row.Subject, row.NotAfter.Format(time.RFC3339))
		case ExpiryWarn14, ExpiryWarn30:
			fmt.Fprintf(w, "\nWARNING %s: the %s certificate %s expires in %d days (%s)", row.Hostname, row.Level, row.Subject, *row.DaysLeft, row.NotAfter.Format("2006-01-02"))
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "\nnote: %s", n)
	}
	_, err := fmt.Fprintln(w)
	return err
}
