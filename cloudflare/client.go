// Package cloudflare is aopguard's view of Authenticated Origin Pulls at
// Cloudflare: it reads the three AOP levels of a zone (global, zone-level,
// per-hostname) through Cloudflare's official Go SDK, judges them against
// the local policies (Audit), and links certificates (Apply) or replaces
// one without downtime (Rotate).
//
// The API token is handed in by the caller and only ever travels in the
// Authorization header the SDK sets; no error, log line or dry-run output
// of this package contains it.
package cloudflare

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/cloudflare/cloudflare-go/v7/dns"
	"github.com/cloudflare/cloudflare-go/v7/option"
	aop "github.com/cloudflare/cloudflare-go/v7/origin_tls_client_auth"
	"github.com/cloudflare/cloudflare-go/v7/zones"
)

// DefaultBaseURL is Cloudflare's API.
const DefaultBaseURL = "https://api.cloudflare.com/client/v4/"

// Options configure a Client.
type Options struct {
	// Token is the API token (from CLOUDFLARE_API_TOKEN).
	Token string
	// BaseURL is the API root; empty means DefaultBaseURL.
	BaseURL string
	// HTTPClient defaults to one with a 30 s timeout.
	HTTPClient *http.Client
	// DryRun, when not nil, receives every write (POST, PUT, PATCH,
	// DELETE) as the SDK would send it, private keys redacted; the write
	// is not sent and answered locally as if it had succeeded.
	DryRun io.Writer
	// MaxRetries bounds the SDK's retries of 429 and 5xx answers (it
	// honours Retry-After); 0 means 3, a negative number none.
	MaxRetries int
}

// Client talks to one Cloudflare account's API.
type Client struct {
	aop      *aop.OriginTLSClientAuthService
	zones    *zones.ZoneService
	settings *zones.SettingService
	dns      *dns.RecordService
	dryRun   bool
}

// New returns a Client. It builds the SDK's services directly rather than
// through cloudflare.NewClient, which would also pick up
// CLOUDFLARE_API_KEY, CLOUDFLARE_EMAIL, CLOUDFLARE_BASE_URL and
// CLOUDFLARE_CUSTOM_HEADERS from the environment.
func New(o Options) (*Client, error) {
	if o.Token == "" {
		return nil, errors.New("cloudflare: no API token: set CLOUDFLARE_API_TOKEN")
	}
	if o.BaseURL == "" {
		o.BaseURL = DefaultBaseURL
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	switch {
	case o.MaxRetries == 0:
		o.MaxRetries = 3
	case o.MaxRetries < 0:
		o.MaxRetries = 0
	}
	opts := []option.RequestOption{
		option.WithBaseURL(o.BaseURL),
		option.WithHTTPClient(o.HTTPClient),
		option.WithAPIToken(o.Token),
		option.WithMaxRetries(o.MaxRetries),
		option.WithHeader("User-Agent", "aopguard"),
	}
	if o.DryRun != nil {
		opts = append(opts, option.WithMiddleware(dryRun(o.DryRun)))
	}
	return &Client{
		aop:      aop.NewOriginTLSClientAuthService(opts...),
		zones:    zones.NewZoneService(opts...),
		settings: zones.NewSettingService(opts...),
		dns:      dns.NewRecordService(opts...),
		dryRun:   o.DryRun != nil,
	}, nil
}

// DryRun reports whether writes are only printed.
func (c *Client) DryRun() bool { return c.dryRun }

// APIError is an error answer from Cloudflare's API: the operation that
// failed, the HTTP status and Cloudflare's error codes and messages. It
// carries nothing of the request (its headers hold the token).
type APIError struct {
	Op       string
	Status   int
	Messages []string
}

// Error says what failed, with Cloudflare's codes and messages, and for a
// 401 or 403 that the token may lack a permission.
func (e *APIError) Error() string {
	hint := ""
	if e.Status == http.StatusForbidden || e.Status == http.StatusUnauthorized {
		hint = " (does the token have the permission this needs? see the README)"
	}
	return fmt.Sprintf("cloudflare: %s: HTTP %d: %s%s", e.Op, e.Status, strings.Join(e.Messages, "; "), hint)
}

// apiError turns an SDK error into an *APIError (or wraps a transport
// error). op names the operation ("listing zones").
func apiError(op string, err error) error {
	var ae *aop.Error
	if errors.As(err, &ae) {
		out := &APIError{Op: op, Status: ae.StatusCode}
		for _, e := range ae.Errors {
			out.Messages = append(out.Messages, fmt.Sprintf("%d %s", e.Code, e.Message))
		}
		return out
	}
	return fmt.Errorf("cloudflare: %s: %w", op, err)
}

var zoneID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// ResolveZone returns the ID of a zone given its ID or its name.
func (c *Client) ResolveZone(ctx context.Context, idOrName string) (string, error) {
	if zoneID.MatchString(idOrName) {
		return idOrName, nil
	}
	var p zones.ZoneListParams
	p.Name.Value, p.Name.Present = strings.ToLower(strings.TrimSuffix(idOrName, ".")), true
	pager := c.zones.ListAutoPaging(ctx, p)
	var ids []string
	for pager.Next() {
		z := pager.Current()
		if strings.EqualFold(z.Name, p.Name.Value) {
			ids = append(ids, z.ID)
		}
	}
	if err := pager.Err(); err != nil {
		return "", apiError("looking up zone "+idOrName, err)
	}
	switch len(ids) {
	case 0:
		return "", fmt.Errorf("cloudflare: no zone named %q is visible to this token", idOrName)
	case 1:
		return ids[0], nil
	}
	return "", fmt.Errorf("cloudflare: %d zones are named %q: pass the zone ID", len(ids), idOrName)
}

// dryRun is the middleware behind Options.DryRun: reads pass, writes are
// printed with private keys redacted and answered locally.
func dryRun(w io.Writer) option.Middleware {
	return func(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			return next(r)
		}
		var body []byte
		if r.Body != nil {
			b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			r.Body.Close()
			if err != nil {
				return nil, fmt.Errorf("cloudflare: dry run: reading request body: %w", err)
			}
			body = b
		}
		shown, result := redact(body)
		fmt.Fprintf(w, "dry run: would send %s %s %s\n", r.Method, r.URL.Path, shown)
		env, _ := json.Marshal(map[string]any{"success": true, "errors": []any{}, "messages": []any{}, "result": result})
		return &http.Response{
			StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header:  http.Header{"Content-Type": {"application/json"}},
			Body:    io.NopCloser(bytes.NewReader(env)),
			Request: r,
		}, nil
	}
}

// redact returns the body to print, with private_key replaced, and the
// result a successful answer would carry: the request echoed back with
// status active, for the steps after it.
func redact(body []byte) (string, any) {
	if len(body) == 0 {
		return "", map[string]any{"id": "dry-run", "status": "active"}
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		return "(a body that is not JSON, not shown)", map[string]any{"id": "dry-run", "status": "active"}
	}
	if _, ok := m["private_key"]; ok {
		m["private_key"] = "[REDACTED]"
	}
	shown, _ := json.Marshal(m)
	var result any = map[string]any{"id": "dry-run", "status": "active", "certificate": m["certificate"], "enabled": m["enabled"]}
	if cfg, ok := m["config"].([]any); ok {
		for _, e := range cfg {
			if e, ok := e.(map[string]any); ok {
				e["status"] = "active"
			}
		}
		result = cfg
	}
	return string(shown), result
}
