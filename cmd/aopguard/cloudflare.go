package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/aopguard/aopguard/cloudflare"
	"github.com/aopguard/aopguard/config"
	"github.com/aopguard/aopguard/snapshot"
	"github.com/aopguard/aopguard/tlsconfig"
)

const cloudflareUsage = `Usage: aopguard cloudflare SUBCOMMAND [flags]

  aopguard cloudflare audit  --config FILE --zone ZONE [--json]
  aopguard cloudflare apply  --config FILE --zone ZONE --cert FILE --key FILE (--hostnames NAME[,NAME...] | --zone-level) [--dry-run]
  aopguard cloudflare rotate --zone ZONE --host NAME --cert FILE --key FILE [--admin URL | --config FILE] [--delete-old]

ZONE is a zone ID or name. The API token is read from CLOUDFLARE_API_TOKEN
only. Run "aopguard cloudflare SUBCOMMAND -h" for a subcommand's flags.
`

const cloudflareAuditUsage = `Usage: aopguard cloudflare audit --config FILE --zone ZONE [--json] [--api-url URL]

Reads what Cloudflare presents to this origin for Authenticated Origin Pulls,
level by level (zone, per-hostname, and the hostnames in between), and judges
it under the policies of --config, built as "aopguard run" builds them. It
changes nothing. The API token is read from CLOUDFLARE_API_TOKEN only. Exit
status: 0 when no hostname will break, 1 otherwise, 2 for a bad invocation,
a bad configuration or a missing token.

Flags:
`

const cloudflareApplyUsage = `Usage: aopguard cloudflare apply --config FILE --zone ZONE --cert FILE --key FILE
                                (--hostnames NAME[,NAME...] | --zone-level) [--dry-run]
                                [--wait DURATION] [--poll DURATION] [--api-url URL]

Uploads the client certificate and links it to the hostnames (per-hostname
AOP) or makes it the zone's (--zone-level), in one idempotent run: an upload
already there (same fingerprint) is reused. It first checks that the policies
of --config accept the certificate. The API token is read from
CLOUDFLARE_API_TOKEN only, and the private key goes to Cloudflare only. Exit
status: 0 once everything is active at Cloudflare, 1 on a refusal, an API
error or when --wait runs out, 2 for a bad invocation.

Flags:
`

const cloudflareRotateUsage = `Usage: aopguard cloudflare rotate --zone ZONE --host NAME --cert FILE --key FILE
                                 [--admin URL | --config FILE] [--delete-old]
                                 [--wait DURATION] [--poll DURATION] [--api-url URL]

Replaces the per-hostname client certificate of --host without downtime:
checks with the running aopguard (its admin listener) that the new
certificate is accepted, uploads and links it, and waits until the origin sees
Cloudflare present it; --delete-old then deletes the previous one. The API
token is read from CLOUDFLARE_API_TOKEN only. Exit status: 0 once the
rotation is complete, 1 when it fails, 2 for a bad invocation.

Flags:
`

// tokenEnv is the only place the API token comes from.
const tokenEnv = "CLOUDFLARE_API_TOKEN"

// cloudflareCommand is "aopguard cloudflare audit|apply|rotate".
func cloudflareCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, cloudflareUsage)
		return exitConfig
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var err error
	switch args[0] {
	case "audit":
		err = cloudflareAudit(ctx, args[1:], stdout, stderr)
	case "apply":
		err = cloudflareApply(ctx, args[1:], stdout, stderr)
	case "rotate":
		err = cloudflareRotate(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, cloudflareUsage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "aopguard cloudflare: unknown subcommand %q\n\n%s", args[0], cloudflareUsage)
		return exitConfig
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintf(stderr, "aopguard cloudflare %s: %v\n", args[0], err)
		return exitCode(err)
	}
	return exitOK
}

// cfFlags are the flags every subcommand shares.
type cfFlags struct {
	fs                *commandFlags
	zone, apiURL, cfg string
	cert, key         string
	wait, poll        time.Duration
}

// newCFFlags returns the flag set of "aopguard cloudflare name"; -h writes
// usage and the flags to stdout.
func newCFFlags(name, usage string, stdout io.Writer) *cfFlags {
	f := &cfFlags{fs: newCommandFlags("aopguard cloudflare "+name, usage, stdout)}
	f.fs.StringVar(&f.zone, "zone", "", "the Cloudflare zone: its ID or name, `ZONE`")
	f.fs.StringVar(&f.apiURL, "api-url", cloudflare.DefaultBaseURL, "Cloudflare's API at `URL` (for API gateways and tests)")
	f.fs.StringVar(&f.cfg, "config", "", "aopguard's configuration `FILE`, for its policies")
	return f
}

func (f *cfFlags) certFlags(waitDefault time.Duration) {
	f.fs.StringVar(&f.cert, "cert", "", "the client certificate (PEM) `FILE` Cloudflare is to present")
	f.fs.StringVar(&f.key, "key", "", "its private key `FILE` (sent to Cloudflare only, never printed)")
	f.fs.DurationVar(&f.wait, "wait", waitDefault, "wait at most `DURATION` for Cloudflare (and the origin) to confirm")
	f.fs.DurationVar(&f.poll, "poll", 5*time.Second, "re-read statuses every `DURATION` while waiting")
}

func (f *cfFlags) parse(args []string) error {
	if err := f.fs.Parse(args); err != nil {
		return err // the help, or an invocation error
	}
	if f.fs.NArg() > 0 {
		return &exitError{exitConfig, fmt.Errorf("unexpected argument %q", f.fs.Arg(0))}
	}
	if f.zone == "" {
		return &exitError{exitConfig, errors.New("--zone is required (a zone ID or name)")}
	}
	if f.fs.Lookup("cert") != nil && (f.cert == "" || f.key == "") {
		return &exitError{exitConfig, errors.New("--cert and --key are required")}
	}
	if f.fs.Lookup("wait") != nil && (f.wait <= 0 || f.poll <= 0) {
		return &exitError{exitConfig, errors.New("--wait and --poll must be positive")}
	}
	return nil
}

// client builds the API client and resolves the zone. The token comes
// from the environment and goes nowhere but the SDK.
func (f *cfFlags) client(ctx context.Context, dryRun io.Writer) (*cloudflare.Client, string, error) {
	token := os.Getenv(tokenEnv)
	if token == "" {
		return nil, "", &exitError{exitConfig, errors.New(tokenEnv + " is not set: create an API token (see the README for the permissions each subcommand needs)")}
	}
	c, err := cloudflare.New(cloudflare.Options{Token: token, BaseURL: f.apiURL, DryRun: dryRun})
	if err != nil {
		return nil, "", &exitError{exitConfig, err}
	}
	id, err := c.ResolveZone(ctx, f.zone)
	if err != nil {
		return nil, "", err
	}
	return c, id, nil
}

// policies builds the local policies from the configuration exactly as
// "aopguard run" does (reading every CA bundle, CRL and allow rule).
func policies(file string) (*tlsconfig.Set, error) {
	if file == "" {
		return nil, &exitError{exitConfig, errors.New("--config is required: the policies Cloudflare's side is checked against come from it")}
	}
	cfg, err := (&flags{configFile: file, set: map[string]bool{}}).config()
	if err != nil {
		return nil, &exitError{exitConfig, err}
	}
	zone, hosts, _, err := snapshot.Policies(cfg)
	if err != nil {
		return nil, &exitError{exitConfig, err}
	}
	keys, err := tlsconfig.NewTicketKeys()
	if err != nil {
		return nil, err
	}
	set, err := tlsconfig.NewSet(zone, hosts, tlsconfig.Options{Tickets: keys, StrictHosts: cfg.StrictHosts})
	if err != nil {
		return nil, &exitError{exitConfig, &config.Error{File: cfg.File, Err: err}}
	}
	return set, nil
}

func readUpload(f *cfFlags) (*cloudflare.Upload, error) {
	certPEM, err := os.ReadFile(f.cert)
	if err != nil {
		return nil, &exitError{exitConfig, fmt.Errorf("--cert: %w", err)}
	}
	keyPEM, err := os.ReadFile(f.key)
	if err != nil {
		return nil, &exitError{exitConfig, fmt.Errorf("--key: %w", err)}
	}
	u := &cloudflare.Upload{CertPEM: certPEM, KeyPEM: keyPEM}
	if _, err := u.Chain(); err != nil {
		return nil, &exitError{exitConfig, fmt.Errorf("--cert %s: %w", f.cert, err)}
	}
	return u, nil
}

// errWillBreak makes audit exit 1 after printing its report.
var errWillBreak = errors.New("at least one hostname will break: see the report")

func cloudflareAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newCFFlags("audit", cloudflareAuditUsage, stdout)
	asJSON := f.fs.Bool("json", false, "print the audit as JSON")
	if err := f.parse(args); err != nil {
		return err
	}
	set, err := policies(f.cfg)
	if err != nil {
		return err
	}
	c, zoneID, err := f.client(ctx, nil)
	if err != nil {
		return err
	}
	var names []string
	for _, p := range set.Policies()[1:] {
		names = append(names, p.Name())
	}
	st, err := c.ReadState(ctx, zoneID, names)
	if err != nil {
		return err
	}
	rep := cloudflare.Audit(st, set, time.Now())
	if *asJSON {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteTable(stdout)
	}
	if err != nil {
		return err
	}
	if rep.Breaks() {
		return errWillBreak
	}
	return nil
}

func cloudflareApply(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newCFFlags("apply", cloudflareApplyUsage, stdout)
	f.certFlags(10 * time.Minute)
	hostnames := f.fs.String("hostnames", "", "link the certificate to host `NAME` (comma-separated for several; per-hostname AOP)")
	zoneLevel := f.fs.Bool("zone-level", false, "make the certificate the zone-level one and enable zone-level AOP")
	dryRun := f.fs.Bool("dry-run", false, "print each request that would change something, private key redacted, and send none")
	if err := f.parse(args); err != nil {
		return err
	}
	var hosts []string
	for _, h := range strings.Split(*hostnames, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, strings.ToLower(h))
		}
	}
	if (len(hosts) == 0) == !*zoneLevel {
		return &exitError{exitConfig, errors.New("give either --hostnames or --zone-level")}
	}
	up, err := readUpload(f)
	if err != nil {
		return err
	}
	set, err := policies(f.cfg)
	if err != nil {
		return err
	}
	var dry io.Writer
	if *dryRun {
		dry = stdout
	}
	c, zoneID, err := f.client(ctx, dry)
	if err != nil {
		return err
	}
	_, err = c.Apply(ctx, cloudflare.ApplyOptions{ZoneID: zoneID, Upload: up, Hostnames: hosts, ZoneLevel: *zoneLevel,
		Policies: set, Out: stdout, Wait: f.wait, Poll: f.poll})
	return err
}

func cloudflareRotate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newCFFlags("rotate", cloudflareRotateUsage, stdout)
	f.certFlags(15 * time.Minute)
	host := f.fs.String("host", "", "the host `NAME` whose per-hostname certificate is replaced")
	admin := f.fs.String("admin", "", "the running aopguard's admin listener `URL` (default: the config's admin address, else "+config.DefaultAdmin+")")
	deleteOld := f.fs.Bool("delete-old", false, "delete the previous certificate once the origin has seen the new one")
	if err := f.parse(args); err != nil {
		return err
	}
	if *host == "" {
		return &exitError{exitConfig, errors.New("--host is required")}
	}
	up, err := readUpload(f)
	if err != nil {
		return err
	}
	if *admin == "" {
		*admin = config.DefaultAdmin
		if f.cfg != "" {
			cfg, err := config.Load(f.cfg)
			if err != nil {
				return &exitError{exitConfig, err}
			}
			*admin = cfg.Admin
		}
	}
	base, err := adminURL(*admin)
	if err != nil {
		return &exitError{exitConfig, fmt.Errorf("--admin: %w", err)}
	}
	c, zoneID, err := f.client(ctx, nil)
	if err != nil {
		return err
	}
	return c.Rotate(ctx, cloudflare.RotateOptions{ZoneID: zoneID, Host: strings.ToLower(*host), Upload: up, DeleteOld: *deleteOld,
		Origin: &adminOrigin{base: base, client: &http.Client{Timeout: 10 * time.Second}}, Out: stdout, Wait: f.wait, Poll: f.poll})
}

// adminURL accepts "host:port" (as "status --admin" does) or a URL.
func adminURL(s string) (string, error) {
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("%q is not host:port or an http(s) URL", s)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

// adminOrigin asks a running aopguard through its admin listener.
type adminOrigin struct {
	base   string
	client *http.Client
}

func (o *adminOrigin) getJSON(req *http.Request, v any) error {
	resp, err := o.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s answered %s: %s (is this aopguard recent enough?)", req.Method, req.URL.Path, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	return nil
}

func (o *adminOrigin) Trust(ctx context.Context, host string, certPEM []byte) (bool, string, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.base+"/trust?host="+url.QueryEscape(host), bytes.NewReader(certPEM))
	if err != nil {
		return false, "", "", err
	}
	req.Header.Set("Content-Type", "application/x-pem-file")
	var ans trustAnswer
	if err := o.getJSON(req, &ans); err != nil {
		return false, "", "", err
	}
	return ans.Trusted, ans.Policy + " (" + ans.Mode + ")", ans.Reason, nil
}

func (o *adminOrigin) Seen(ctx context.Context, host, fingerprint string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.base+"/clients?host="+url.QueryEscape(host), nil)
	if err != nil {
		return false, err
	}
	var ans clientsAnswer
	if err := o.getJSON(req, &ans); err != nil {
		return false, err
	}
	for _, c := range ans.Clients {
		if c.Fingerprint == fingerprint && c.FromCloudflare != nil {
			return true, nil
		}
	}
	return false, nil
}
