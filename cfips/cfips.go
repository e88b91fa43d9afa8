// Package cfips tells whether a peer address belongs to Cloudflare's edge.
// That is how log-only mode tells "Cloudflare traffic without a valid
// certificate" (enforcing would break the site) from "a scanner without a
// certificate" (enforcing is the point). The addresses only classify
// traffic; admission is decided by certificates alone.
package cfips

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"
)

// Sources: how a peer address is classified in metrics, logs and reports.
const (
	Cloudflare = "cloudflare"
	Other      = "other"
)

// SnapshotDate is when the embedded list was taken from Cloudflare's
// published ranges.
const SnapshotDate = "2026-09-29"

//go:embed ranges.txt
var embedded []byte

// List is an immutable set of address prefixes.
type List struct {
	v4, v6 []netip.Prefix
	origin string // where the list came from, for logs
}

// Default returns the embedded snapshot of Cloudflare's ranges.
func Default() *List {
	l, err := Parse(embedded)
	if err != nil {
		panic(fmt.Sprintf("cfips: embedded list is broken: %v", err))
	}
	l.origin = "embedded snapshot of " + SnapshotDate
	return l
}

// Parse reads one CIDR prefix (or bare address) per line; blank lines and
// "#" comments are ignored.
func Parse(data []byte) (*List, error) {
	l := &List{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" {
			continue
		}
		p, err := netip.ParsePrefix(line)
		if err != nil {
			a, aerr := netip.ParseAddr(line)
			if aerr != nil {
				return nil, fmt.Errorf("line %d: %q is not an address prefix", n, line)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		p = p.Masked()
		if p.Addr().Is4() || p.Addr().Is4In6() {
			l.v4 = append(l.v4, netip.PrefixFrom(p.Addr().Unmap(), min(p.Bits(), 32)))
		} else {
			l.v6 = append(l.v6, p)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if l.Len() == 0 {
		return nil, errors.New("no address prefixes")
	}
	return l, nil
}

// Load reads a list from a file.
func Load(path string) (*List, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	l, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	l.origin = path
	return l, nil
}

// Len returns the number of prefixes.
func (l *List) Len() int { return len(l.v4) + len(l.v6) }

// Origin says where the list came from.
func (l *List) Origin() string { return l.origin }

// Contains reports whether addr is inside the list.
func (l *List) Contains(addr netip.Addr) bool {
	addr = addr.Unmap()
	ps := l.v6
	if addr.Is4() {
		ps = l.v4
	}
	for _, p := range ps {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Fetch downloads and parses lists from urls (for Cloudflare:
// https://www.cloudflare.com/ips-v4 and https://www.cloudflare.com/ips-v6)
// and merges them. Each response is bounded to 64 KiB.
func Fetch(ctx context.Context, client *http.Client, urls []string) (*List, error) {
	var all bytes.Buffer
	for _, u := range urls {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", u, err)
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s: HTTP %d", u, resp.StatusCode)
		}
		if _, err := Parse(body); err != nil {
			return nil, fmt.Errorf("%s: %w", u, err)
		}
		all.Write(body)
		all.WriteByte('\n')
	}
	l, err := Parse(all.Bytes())
	if err != nil {
		return nil, err
	}
	l.origin = strings.Join(urls, ", ") + " at " + time.Now().UTC().Format(time.RFC3339)
	return l, nil
}

// CheckShrink refuses a refreshed list that lost more than a quarter of
// the current list's prefixes: a truncated download or a hijacked answer
// must not silently reclassify Cloudflare as "other".
func CheckShrink(current, next *List) error {
	if next.Len()*4 < current.Len()*3 {
		return fmt.Errorf("refreshed list has %d prefixes, the current one %d: refusing a list that shrank by more than 25%%", next.Len(), current.Len())
	}
	return nil
}
