package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aopguard/aopguard/certs"
	"github.com/aopguard/aopguard/config"
	"github.com/aopguard/aopguard/rollout"
)

// report builds the rollout report for the running policies.
func (a *app) report() rollout.Report {
	now := time.Now()
	var infos []rollout.PolicyInfo
	for _, p := range a.set().Policies() {
		info := rollout.PolicyInfo{Name: p.Name(), Mode: p.Mode().String()}
		for _, c := range p.CAs() {
			info.CAs = append(info.CAs, rollout.CAInfo{Subject: certs.Describe(c), NotAfter: c.NotAfter.UTC(), DaysLeft: int(c.NotAfter.Sub(now).Hours() / 24)})
		}
		infos = append(infos, info)
	}
	return a.tracker.Report(infos, a.ips.Load().Origin())
}

// serveStatus is GET /status on the admin listener.
func (a *app) serveStatus(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(a.report())
}

const statusUsage = `Usage: aopguard status [--admin ADDR] [--json]

Asks a running aopguard (GET /status on its admin listener) whether its
log-only policies are ready to be switched to require, and prints the report:
per policy, the requests from Cloudflare and from elsewhere with and without
a valid certificate, the verdict and its likely cause. Exit status: 0 when
every log-only policy is ready_to_enforce, 1 otherwise or when aopguard
cannot be asked, 2 for a bad invocation.

Flags:
`

// statusCommand is "aopguard status": the report as a table. It exits 0
// only when every log-only policy is ready to enforce.
func statusCommand(args []string, stdout, stderr io.Writer) int {
	fs := newCommandFlags("aopguard status", statusUsage, stdout)
	admin := fs.String("admin", config.DefaultAdmin, "ask the aopguard whose admin listener is at `ADDR`")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		if isHelp(err) {
			return exitOK
		}
		fmt.Fprintf(stderr, "aopguard status: %v\n", err)
		return exitConfig
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + *admin + "/status")
	if err != nil {
		fmt.Fprintf(stderr, "aopguard status: %v\n", err)
		return exitFail
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "aopguard status: %s answered %s %v\n", *admin, resp.Status, err)
		return exitFail
	}
	var rep rollout.Report
	if err := json.Unmarshal(body, &rep); err != nil {
		fmt.Fprintf(stderr, "aopguard status: %s/status is not a report: %v\n", *admin, err)
		return exitFail
	}
	if *asJSON {
		stdout.Write(body)
	} else {
		printReport(stdout, rep, colorful(stdout))
	}
	for _, p := range rep.Policies {
		if p.Mode == "log-only" && p.Verdict != rollout.ReadyToEnforce {
			return exitFail
		}
	}
	return exitOK
}

// colorful reports whether w is a terminal that wants colour.
func colorful(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func printReport(w io.Writer, rep rollout.Report, color bool) {
	paint := func(verdict string) string {
		if !color {
			return verdict
		}
		code := "33" // yellow: no traffic, off
		switch verdict {
		case rollout.ReadyToEnforce, rollout.Enforced:
			code = "32"
		case rollout.NotReady:
			code = "31"
		}
		return "\x1b[" + code + "m" + verdict + "\x1b[0m"
	}
	fmt.Fprintf(w, "aopguard rollout report, %s (window %s, %d Cloudflare requests needed; Cloudflare ranges: %s)\n\n",
		rep.Generated.Local().Format(time.RFC1123), rep.Window, rep.MinRequests, rep.CloudflareIPs)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POLICY\tMODE\tVERDICT\tCLOUDFLARE OK\tCLOUDFLARE FAILED\tOTHER OK\tOTHER FAILED\tHEALTH CHECKS")
	for _, p := range rep.Policies {
		var cfOK, cfBad, otOK, otBad uint64
		for _, c := range p.LastHour.By {
			ok := c.Result == "success" || (c.Result == "none" && c.Reason == "")
			switch {
			case c.Source == rollout.SourceCloudflare && ok:
				cfOK += c.Count
			case c.Source == rollout.SourceCloudflare:
				cfBad += c.Count
			case ok:
				otOK += c.Count
			default:
				otBad += c.Count
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\n", p.Name, p.Mode, paint(p.Verdict), cfOK, cfBad, otOK, otBad, p.LastHour.HealthChecks)
	}
	tw.Flush()
	for _, p := range rep.Policies {
		fmt.Fprintf(w, "\n%s: %s — %s\n", p.Name, paint(p.Verdict), p.Why)
		for _, ca := range p.CAs {
			fmt.Fprintf(w, "  trusts %s (expires %s, %d days left)\n", ca.Subject, ca.NotAfter.Format("2006-01-02"), ca.DaysLeft)
		}
		reasons := map[string]uint64{}
		for _, c := range p.LastHour.By {
			if c.Reason != "" {
				reasons[c.Source+" "+c.Reason] += c.Count
			}
		}
		if len(reasons) > 0 {
			keys := make([]string, 0, len(reasons))
			for k := range reasons {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			var parts []string
			for _, k := range keys {
				parts = append(parts, fmt.Sprintf("%s ×%d", k, reasons[k]))
			}
			fmt.Fprintf(w, "  failures in the last hour: %s\n", strings.Join(parts, ", "))
		}
		for i, f := range p.FailingSources {
			if i == 5 {
				fmt.Fprintf(w, "  … and %d more failing sources (aopguard status --json)\n", len(p.FailingSources)-5)
				break
			}
			fmt.Fprintf(w, "  failing source %s (%s): %s ×%d, last %s\n", f.Address, f.Source, f.Reason, f.Count, f.LastSeen.Local().Format(time.TimeOnly))
		}
	}
}
