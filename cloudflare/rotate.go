package cloudflare

import (
	"context"
	"fmt"
	"io"
	"time"
)

// Origin is the running aopguard, as rotate needs it.
type Origin interface {
	// Trust asks whether the policy serving host accepts the certificate
	// chain certPEM; reason says why not.
	Trust(ctx context.Context, host string, certPEM []byte) (trusted bool, policy, reason string, err error)
	// Seen reports whether the policy serving host has recently verified
	// a connection from Cloudflare presenting the leaf with fingerprint.
	Seen(ctx context.Context, host, fingerprint string) (bool, error)
}

// RotateOptions describe one per-hostname rotation.
type RotateOptions struct {
	ZoneID, Host string
	Upload       *Upload
	Origin       Origin
	// DeleteOld deletes the previously linked certificate once the
	// origin has seen the new one.
	DeleteOld bool
	Out       io.Writer
	// Wait bounds each wait (active at Cloudflare, traffic at the
	// origin); Poll is the interval between reads.
	Wait, Poll time.Duration
}

// Rotate is Cloudflare's "replace a client certificate without downtime"
// for one hostname: check that the running aopguard already trusts the new
// certificate, upload it, link it, wait until it is active and until
// aopguard has verified Cloudflare traffic presenting it, then (with
// DeleteOld) delete the old one. Every step is printed as it happens.
func (c *Client) Rotate(ctx context.Context, o RotateOptions) error {
	fp, err := o.Upload.Fingerprint()
	if err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "1/6 asking the running aopguard whether %s trusts the new certificate (sha256 %s)\n", o.Host, fp)
	ok, policy, reason, err := o.Origin.Trust(ctx, o.Host, o.Upload.CertPEM)
	if err != nil {
		return fmt.Errorf("asking aopguard: %w", err)
	}
	if !ok {
		return fmt.Errorf("refusing to rotate: the running aopguard's policy %s for %s would refuse the new certificate (%s): add its CA to the policy's bundle and reload first", policy, o.Host, reason)
	}
	fmt.Fprintf(o.Out, "    policy %s trusts it\n", policy)

	fmt.Fprintf(o.Out, "2/6 reading the current per-hostname AOP of %s\n", o.Host)
	cur, linked, err := c.Hostname(ctx, o.ZoneID, o.Host)
	if err != nil {
		return err
	}
	old := ""
	if linked {
		old = cur.CertID
		fmt.Fprintf(o.Out, "    linked to certificate %s (sha256 %s, %s)\n", cur.CertID, cur.Cert.Fingerprint, cur.Status)
	} else {
		fmt.Fprintln(o.Out, "    no certificate linked yet")
	}

	fmt.Fprintln(o.Out, "3/6 uploading the new certificate")
	id, _, err := c.ensureUploaded(ctx, o.ZoneID, o.Upload, false, o.Out)
	if err != nil {
		return err
	}
	if old == id && cur.Enabled {
		fmt.Fprintf(o.Out, "4/6 %s is already linked to %s\n", o.Host, id)
	} else {
		fmt.Fprintf(o.Out, "4/6 linking %s to %s\n", o.Host, id)
		if err := c.link(ctx, o.ZoneID, id, []string{o.Host}); err != nil {
			return err
		}
	}
	if c.dryRun {
		fmt.Fprintln(o.Out, "dry run: stopping before waiting; nothing changed at Cloudflare")
		return nil
	}
	if err := c.waitActive(ctx, o.ZoneID, id, false, []string{o.Host}, o.Wait, o.Poll, o.Out); err != nil {
		return err
	}

	fmt.Fprintf(o.Out, "5/6 waiting until aopguard verifies Cloudflare traffic for %s presenting the new certificate\n", o.Host)
	wctx, cancel := context.WithTimeout(ctx, o.Wait)
	defer cancel()
	for {
		seen, err := o.Origin.Seen(wctx, o.Host, fp)
		if err == nil && seen {
			break
		}
		if err != nil && wctx.Err() == nil {
			fmt.Fprintf(o.Out, "    asking aopguard failed (retrying): %v\n", err)
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("aopguard has not seen Cloudflare present the new certificate for %s within %s; the old certificate is kept", o.Host, o.Wait)
		case <-time.After(o.Poll):
		}
	}
	fmt.Fprintln(o.Out, "    seen: Cloudflare presents the new certificate and aopguard accepts it")

	switch {
	case !o.DeleteOld:
		fmt.Fprintln(o.Out, "6/6 keeping the old certificate (no --delete-old)")
	case old == "" || old == id:
		fmt.Fprintln(o.Out, "6/6 no old certificate to delete")
	default:
		fmt.Fprintf(o.Out, "6/6 deleting the old certificate %s\n", old)
		if err := c.DeleteHostnameCert(ctx, o.ZoneID, old); err != nil {
			return err
		}
	}
	fmt.Fprintln(o.Out, "rotation complete")
	return nil
}
