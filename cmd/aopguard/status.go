package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"

	"github.com/aopguard/aopguard/certs"
	"github.com/aopguard/aopguard/config"
	"github.com/aopguard/aopguard/fleet"
	"github.com/aopguard/aopguard/rollout"
)

// report builds the rollout report for the running policies.
func (a *app) report() rollout.Report {
	now := time.Now()
	var infos []rollout.PolicyInfo
	for _, p := range a.set().Policies() {
		info := rollout.PolicyInfo{Name: p.Name(), Mode: p.Mode().String(), Signatures: p.Signatures().String()}
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

// defaultConfigFile is where the systemd unit, the container image and the
// Kubernetes example keep the configuration; "aopguard status" reads the
// admin address from it when no --config or --admin is given.
var defaultConfigFile = "/etc/aopguard/aopguard.yaml"

// pageRefresh is how often the rollout page reloads itself.
const pageRefresh = 5 * time.Second

// servePage is GET / on the admin listener: the report as one HTML page
// for a person, reloading itself. It loads nothing else and runs no
// script, which its Content-Security-Policy states.
func (a *app) servePage(w http.ResponseWriter, r *http.Request) {
	var b bytes.Buffer
	if err := rollout.WritePage(&b, a.report(), pageRefresh); err != nil {
		a.log.Error().Err(err).Msg("rendering the rollout page failed")
		http.Error(w, "rendering the rollout page failed", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.Write(b.Bytes())
}

const statusUsage = `Usage: aopguard status [--config FILE | --admin ADDR] [--json]
       aopguard status --prometheus URL [--json] [-v]

Asks a running aopguard (GET /status on its admin listener) whether its
log-only policies are ready to be switched to require, and prints the report:
per policy, the requests from Cloudflare and from elsewhere with and without
a valid certificate, the verdict and its likely cause. The admin address comes
from --admin, else from the configuration (--config, or ` + "`/etc/aopguard/aopguard.yaml`" + `
when it exists), else 127.0.0.1:9090. With --prometheus, the report is for the
whole fleet that Prometheus scrapes. Exit status: 0 when every log-only policy
is ready_to_enforce, 1 otherwise or when aopguard cannot be asked, 2 for a bad
invocation.

Flags:
`

// statusCommand is "aopguard status": the report as a table, from one
// aopguard's admin listener or, with --prometheus, for the whole fleet. It
// exits 0 only when every log-only policy is ready to enforce.
func statusCommand(args []string, stdout, stderr io.Writer) int {
	fs := newCommandFlags("aopguard status", statusUsage, stdout)
	configFile := fs.String("config", "", "read the admin address from the configuration `FILE` (default "+defaultConfigFile+" when it exists)")
	admin := fs.String("admin", "", "ask the aopguard whose admin listener is at `ADDR` (default: the configuration's admin, else "+config.DefaultAdmin+")")
	promURL := fs.String("prometheus", "", "judge the whole fleet from the Prometheus at `URL` that scrapes every replica")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	verbose := fs.Bool("v", false, "with --prometheus: print each PromQL query on stderr")
	if err := fs.Parse(args); err != nil {
		if isHelp(err) {
			return exitOK
		}
		fmt.Fprintf(stderr, "aopguard status: %v\n", err)
		return exitConfig
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "aopguard status: unexpected argument %q\n", fs.Arg(0))
		return exitConfig
	}
	var rep rollout.Report
	var body []byte
	if *promURL != "" {
		if *admin != "" || *configFile != "" {
			fmt.Fprintln(stderr, "aopguard status: --prometheus asks Prometheus about the fleet; --admin and --config ask one aopguard: give one or the other")
			return exitConfig
		}
		if u, err := url.Parse(*promURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			fmt.Fprintf(stderr, "aopguard status: --prometheus %q: want the http:// or https:// URL of Prometheus\n", *promURL)
			return exitConfig
		}
		var err error
		if rep, err = fleetReport(*promURL, *verbose, stderr); err != nil {
			fmt.Fprintf(stderr, "aopguard status: %v\n", err)
			return exitFail
		}
		if body, err = json.MarshalIndent(rep, "", "  "); err != nil {
			fmt.Fprintf(stderr, "aopguard status: %v\n", err)
			return exitFail
		}
		body = append(body, '\n')
	} else {
		addr, from, err := statusAdmin(*admin, *configFile)
		if err != nil {
			fmt.Fprintf(stderr, "aopguard status: %v\n", err)
			return exitConfig
		}
		if rep, body, err = fetchStatus(addr); err != nil {
			fmt.Fprintf(stderr, "aopguard status: %v (admin address %s)\n"+
				"Point it at the running aopguard with --config FILE (its admin: key) or --admin ADDR, or at a fleet with --prometheus URL.\n", err, from)
			return exitFail
		}
	}
	if *asJSON {
		stdout.Write(body)
	} else {
		printReport(stdout, rep, colorful(stdout))
	}
	for _, p := range rep.Policies {
		if strings.Contains(p.Mode, "log-only") && p.Verdict != rollout.ReadyToEnforce {
			return exitFail
		}
	}
	return exitOK
}

// statusAdmin picks the admin address to ask: --admin, else the admin key
// of --config or of the default configuration file, else the default. It
// also says where the address came from, for errors.
func statusAdmin(admin, configFile string) (addr, from string, err error) {
	if admin != "" {
		return dialable(admin), "from --admin", nil
	}
	file := configFile
	if file == "" {
		if _, err := os.Stat(defaultConfigFile); err != nil {
			return dialable(config.DefaultAdmin), "is the default: no --config or --admin given, and no " + defaultConfigFile, nil
		}
		file = defaultConfigFile
	}
	cfg, err := config.Load(file)
	if err != nil {
		return "", "", fmt.Errorf("reading the admin address: %w (give --config FILE or --admin ADDR)", err)
	}
	return dialable(cfg.Admin), "from the admin key of " + file, nil
}

// dialable turns a listen address into one to connect to: a wildcard host
// (":9090", "0.0.0.0:9090", "[::]:9090") is asked over loopback.
func dialable(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// fetchStatus reads the report from an admin listener.
func fetchStatus(addr string) (rollout.Report, []byte, error) {
	var rep rollout.Report
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + "/status")
	if err != nil {
		return rep, nil, fmt.Errorf("no aopguard answers at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return rep, nil, fmt.Errorf("reading http://%s/status: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return rep, nil, fmt.Errorf("http://%s/status answered %s", addr, resp.Status)
	}
	if err := json.Unmarshal(body, &rep); err != nil {
		return rep, nil, fmt.Errorf("http://%s/status is not an aopguard report: %w", addr, err)
	}
	return rep, body, nil
}

// fleetReport asks Prometheus for the fleet's report.
func fleetReport(promURL string, verbose bool, stderr io.Writer) (rollout.Report, error) {
	client, err := promapi.NewClient(promapi.Config{Address: promURL, Client: &http.Client{Timeout: 30 * time.Second}})
	if err != nil {
		return rollout.Report{}, fmt.Errorf("--prometheus %q: %w", promURL, err)
	}
	var trace func(string)
	if verbose {
		trace = func(q string) { fmt.Fprintf(stderr, "query: %s\n", q) }
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := fleet.Report(ctx, promv1.NewAPI(client), time.Now(), trace)
	if err != nil {
		return rep, fmt.Errorf("asking Prometheus at %s: %w", promURL, err)
	}
	return rep, nil
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
	if rep.Replicas > 0 {
		fmt.Fprintf(w, "aopguard fleet rollout report, %s: %d replicas summed by Prometheus (window %s, %d Cloudflare requests needed)\n\n",
			rep.Generated.Local().Format(time.RFC1123), rep.Replicas, rep.Window, rep.MinRequests)
	} else {
		fmt.Fprintf(w, "aopguard rollout report, %s (window %s, %d Cloudflare requests needed; Cloudflare ranges: %s)\n\n",
			rep.Generated.Local().Format(time.RFC1123), rep.Window, rep.MinRequests, rep.CloudflareIPs)
	}
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
		printPostQuantum(w, p)
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
		if rep.Replicas > 0 && len(reasons) > 0 {
			fmt.Fprintf(w, "  failing sources: see each replica's /status (aopguard status --config FILE in each)\n")
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

// printPostQuantum writes a policy's post-quantum line: the shares of
// Cloudflare's verified handshakes with ML-DSA certificates and with
// post-quantum key agreement, and whether switching is safe.
func printPostQuantum(w io.Writer, p rollout.PolicyReport) {
	sigs, ok := p.PostQuantumShown()
	if !ok {
		return // nothing to say yet: no verified handshake since start
	}
	pq := p.PostQuantum
	fmt.Fprintf(w, "  post-quantum (client_cert_signatures: %s): %s of %d verified Cloudflare handshakes in the last hour with ML-DSA certificates, %s with post-quantum key agreement\n",
		sigs, rollout.Percent(pq.MLDSAShare), pq.LastHour.Cloudflare.Verified, rollout.Percent(pq.KeyAgreementShare))
	fmt.Fprintf(w, "    %s — %s\n", pq.Verdict, pq.Why)
}
