package cloudflare

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	aop "github.com/cloudflare/cloudflare-go/v7/origin_tls_client_auth"

	"github.com/aopguard/aopguard/certs"
	"github.com/aopguard/aopguard/tlsconfig"
)

// Upload is a client certificate and its private key, as PEM, to give
// Cloudflare. The key is only ever put in the upload request's body.
type Upload struct {
	CertPEM []byte
	KeyPEM  []byte
	chain   []*x509.Certificate
}

// Chain returns the parsed chain, leaf first.
func (u *Upload) Chain() ([]*x509.Certificate, error) {
	if u.chain == nil {
		c, err := certs.ParseBundle(u.CertPEM)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		u.chain = c
	}
	return u.chain, nil
}

// Fingerprint is the leaf's SHA-256 fingerprint.
func (u *Upload) Fingerprint() (string, error) {
	c, err := u.Chain()
	if err != nil {
		return "", err
	}
	return certs.Fingerprint(c[0].Raw), nil
}

// ApplyOptions say what Apply links.
type ApplyOptions struct {
	ZoneID string
	Upload *Upload
	// Hostnames get per-hostname AOP with the certificate; with ZoneLevel
	// the certificate becomes the zone-level one instead.
	Hostnames []string
	ZoneLevel bool
	// Policies are the local policies; a hostname is linked only if the
	// policy serving it accepts the certificate.
	Policies *tlsconfig.Set
	// Out receives one line per step.
	Out io.Writer
	// Wait bounds the wait for active; Poll is the interval between
	// status reads.
	Wait, Poll time.Duration
}

// Apply uploads the certificate unless one with the same fingerprint is
// there, links the hostnames (or enables zone-level AOP), and waits until
// Cloudflare reports everything active. A second run makes no write. It
// returns the number of writes made (or, in a dry run, printed).
func (c *Client) Apply(ctx context.Context, o ApplyOptions) (int, error) {
	if len(o.Hostnames) == 0 && !o.ZoneLevel || len(o.Hostnames) > 0 && o.ZoneLevel {
		return 0, errors.New("cloudflare: apply needs hostnames or zone-level, not both")
	}
	chain, err := o.Upload.Chain()
	if err != nil {
		return 0, err
	}
	fp := certs.Fingerprint(chain[0].Raw)
	// Refuse before writing anything.
	targets := o.Hostnames
	if o.ZoneLevel {
		targets = []string{""}
	}
	for _, h := range targets {
		if err := checkTrust(o.Policies, h, chain, o.Out); err != nil {
			return 0, err
		}
	}
	if o.ZoneLevel {
		if err := c.checkZoneLevel(ctx, o.ZoneID, o.Policies, chain, o.Out); err != nil {
			return 0, err
		}
	}
	fmt.Fprintf(o.Out, "certificate %s (sha256 %s, expires %s)\n", certs.Describe(chain[0]), fp, chain[0].NotAfter.Format("2006-01-02"))
	writes := 0
	id, uploaded, err := c.ensureUploaded(ctx, o.ZoneID, o.Upload, o.ZoneLevel, o.Out)
	if err != nil {
		return writes, err
	}
	if uploaded {
		writes++
	}
	var pending []string
	if o.ZoneLevel {
		var sp aop.SettingGetParams
		sp.ZoneID.Value, sp.ZoneID.Present = o.ZoneID, true
		cur, err := c.aop.Settings.Get(ctx, sp)
		if err != nil {
			return writes, apiError("reading zone-level AOP setting", err)
		}
		if cur.Enabled {
			fmt.Fprintln(o.Out, "zone-level AOP is already enabled")
		} else {
			var up aop.SettingUpdateParams
			up.ZoneID.Value, up.ZoneID.Present = o.ZoneID, true
			up.Enabled.Value, up.Enabled.Present = true, true
			if _, err := c.aop.Settings.Update(ctx, up); err != nil {
				return writes, apiError("enabling zone-level AOP", err)
			}
			writes++
			if !c.dryRun {
				fmt.Fprintln(o.Out, "enabled zone-level AOP")
			}
		}
	} else {
		var link []string
		for _, h := range o.Hostnames {
			cur, ok, err := c.Hostname(ctx, o.ZoneID, h)
			if err != nil {
				return writes, err
			}
			if ok && cur.CertID == id && cur.Enabled {
				fmt.Fprintf(o.Out, "%s is already linked to certificate %s (%s)\n", h, id, cur.Status)
				if cur.Status != "active" {
					pending = append(pending, h)
				}
				continue
			}
			link = append(link, h)
		}
		if len(link) > 0 {
			if err := c.link(ctx, o.ZoneID, id, link); err != nil {
				return writes, err
			}
			writes++
			if !c.dryRun {
				fmt.Fprintf(o.Out, "linked %s to certificate %s\n", strings.Join(link, ", "), id)
			}
			pending = append(pending, link...)
		}
	}
	if c.dryRun {
		fmt.Fprintf(o.Out, "dry run: %d write(s) not sent; nothing changed at Cloudflare\n", writes)
		return writes, nil
	}
	return writes, c.waitActive(ctx, o.ZoneID, id, o.ZoneLevel, pending, o.Wait, o.Poll, o.Out)
}

// checkTrust refuses a hostname ("" for the zone) whose local policy would
// not accept chain; an off policy is linked with a warning.
func checkTrust(set *tlsconfig.Set, host string, chain []*x509.Certificate, out io.Writer) error {
	p := set.Match(host)
	if host == "" {
		p, host = set.Zone(), "the zone"
	}
	if p.Mode() == tlsconfig.Off {
		fmt.Fprintf(out, "warning: %s is served by policy %s, which is off: aopguard will not check this certificate there\n", host, p.Name())
		return nil
	}
	if v := p.Verify(chain); v.Result != tlsconfig.Success {
		return fmt.Errorf("refusing to link %s: its local policy %s (%s) would refuse this certificate (%s): add its CA to the policy's bundle first",
			host, p.Name(), p.Mode(), v.Reason)
	}
	fmt.Fprintf(out, "%s: local policy %s (%s) trusts this certificate\n", host, p.Name(), p.Mode())
	return nil
}

// checkZoneLevel refuses a zone-level certificate that Cloudflare would
// present to a configured host whose require policy refuses it: a host
// without an enabled per-hostname link gets the zone-level certificate.
// Under log-only it warns.
func (c *Client) checkZoneLevel(ctx context.Context, zoneID string, set *tlsconfig.Set, chain []*x509.Certificate, out io.Writer) error {
	for _, p := range set.Policies()[1:] {
		if p.Mode() == tlsconfig.Off {
			continue
		}
		v := p.Verify(chain)
		if v.Result == tlsconfig.Success {
			continue
		}
		h, ok, err := c.Hostname(ctx, zoneID, p.Name())
		if err != nil {
			return err
		}
		if ok && h.Enabled {
			continue // its per-hostname certificate wins
		}
		if p.Mode() == tlsconfig.Require {
			return fmt.Errorf("refusing to enable zone-level AOP with this certificate: %s has no per-hostname certificate at Cloudflare, so it would get this one, and its policy (require) refuses it (%s)",
				p.Name(), v.Reason)
		}
		fmt.Fprintf(out, "warning: %s has no per-hostname certificate at Cloudflare and would get this one, which its policy (%s) refuses (%s): do not enforce it yet\n",
			p.Name(), p.Mode(), v.Reason)
	}
	return nil
}

// ensureUploaded returns the ID of the certificate with the upload's
// fingerprint, uploading it if Cloudflare does not have it.
func (c *Client) ensureUploaded(ctx context.Context, zoneID string, u *Upload, zoneLevel bool, out io.Writer) (string, bool, error) {
	fp, err := u.Fingerprint()
	if err != nil {
		return "", false, err
	}
	var have []Cert
	if zoneLevel {
		var zp aop.ZoneCertificateListParams
		zp.ZoneID.Value, zp.ZoneID.Present = zoneID, true
		l, err := c.aop.ZoneCertificates.List(ctx, zp)
		if err != nil {
			return "", false, apiError("listing zone-level AOP certificates", err)
		}
		for _, z := range l.Result {
			have = append(have, newCert(z.ID, string(z.Status), z.Certificate, z.ExpiresOn, z.UploadedOn))
		}
	} else if have, err = c.HostnameCerts(ctx, zoneID); err != nil {
		return "", false, err
	}
	for _, h := range have {
		if h.Fingerprint == fp && !strings.HasPrefix(h.Status, "pending_deletion") && h.Status != "deleted" && h.Status != "deletion_timed_out" {
			fmt.Fprintf(out, "certificate already uploaded as %s (%s)\n", h.ID, h.Status)
			return h.ID, false, nil
		}
	}
	var id, status string
	if zoneLevel {
		var p aop.ZoneCertificateNewParams
		p.ZoneID.Value, p.ZoneID.Present = zoneID, true
		p.Certificate.Value, p.Certificate.Present = string(u.CertPEM), true
		p.PrivateKey.Value, p.PrivateKey.Present = string(u.KeyPEM), true
		r, err := c.aop.ZoneCertificates.New(ctx, p)
		if err != nil {
			return "", false, apiError("uploading the zone-level certificate", err)
		}
		id, status = r.ID, string(r.Status)
	} else {
		var p aop.HostnameCertificateNewParams
		p.ZoneID.Value, p.ZoneID.Present = zoneID, true
		p.Certificate.Value, p.Certificate.Present = string(u.CertPEM), true
		p.PrivateKey.Value, p.PrivateKey.Present = string(u.KeyPEM), true
		r, err := c.aop.HostnameCertificates.New(ctx, p)
		if err != nil {
			return "", false, apiError("uploading the hostname certificate", err)
		}
		id, status = r.ID, string(r.Status)
	}
	if c.dryRun {
		fmt.Fprintln(out, "dry run: the certificate would be uploaded (its ID stands as \"dry-run\" below)")
	} else {
		fmt.Fprintf(out, "uploaded certificate as %s (%s)\n", id, status)
	}
	return id, true, nil
}

// link enables per-hostname AOP with certificate id for hosts.
func (c *Client) link(ctx context.Context, zoneID, id string, hosts []string) error {
	var p aop.HostnameUpdateParams
	p.ZoneID.Value, p.ZoneID.Present = zoneID, true
	var cfg []aop.HostnameUpdateParamsConfig
	for _, h := range hosts {
		var e aop.HostnameUpdateParamsConfig
		e.Hostname.Value, e.Hostname.Present = h, true
		e.CERTID.Value, e.CERTID.Present = id, true
		e.Enabled.Value, e.Enabled.Present = true, true
		cfg = append(cfg, e)
	}
	p.Config.Value, p.Config.Present = cfg, true
	if _, err := c.aop.Hostnames.Update(ctx, p); err != nil {
		return apiError("linking "+strings.Join(hosts, ", ")+" to certificate "+id, err)
	}
	return nil
}

// waitActive polls until the certificate and every hostname link report
// active, for at most wait.
func (c *Client) waitActive(ctx context.Context, zoneID, id string, zoneLevel bool, hosts []string, wait, poll time.Duration, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	last := ""
	for {
		status, err := c.certStatus(ctx, zoneID, id, zoneLevel)
		if err != nil {
			return err
		}
		state := "certificate " + id + ": " + status
		done := status == "active"
		for _, h := range hosts {
			cur, ok, err := c.Hostname(ctx, zoneID, h)
			if err != nil {
				return err
			}
			s := "not linked"
			if ok {
				s = cur.Status
			}
			state += "; " + h + ": " + s
			done = done && s == "active"
		}
		if state != last {
			fmt.Fprintf(out, "waiting: %s\n", state)
			last = state
		}
		if done {
			fmt.Fprintln(out, "active at Cloudflare")
			return nil
		}
		if strings.HasSuffix(status, "timed_out") {
			return fmt.Errorf("cloudflare: certificate %s: %s", id, status)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cloudflare: not active after %s (%s): %w", wait, state, ctx.Err())
		case <-time.After(poll):
		}
	}
}

func (c *Client) certStatus(ctx context.Context, zoneID, id string, zoneLevel bool) (string, error) {
	if zoneLevel {
		var p aop.ZoneCertificateGetParams
		p.ZoneID.Value, p.ZoneID.Present = zoneID, true
		r, err := c.aop.ZoneCertificates.Get(ctx, id, p)
		if err != nil {
			return "", apiError("reading zone-level certificate "+id, err)
		}
		return string(r.Status), nil
	}
	var p aop.HostnameCertificateGetParams
	p.ZoneID.Value, p.ZoneID.Present = zoneID, true
	r, err := c.aop.HostnameCertificates.Get(ctx, id, p)
	if err != nil {
		return "", apiError("reading hostname certificate "+id, err)
	}
	return string(r.Status), nil
}

// DeleteHostnameCert deletes a per-hostname certificate.
func (c *Client) DeleteHostnameCert(ctx context.Context, zoneID, id string) error {
	var p aop.HostnameCertificateDeleteParams
	p.ZoneID.Value, p.ZoneID.Present = zoneID, true
	if _, err := c.aop.HostnameCertificates.Delete(ctx, id, p); err != nil {
		return apiError("deleting hostname certificate "+id, err)
	}
	return nil
}
