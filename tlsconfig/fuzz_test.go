package tlsconfig

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aopguard/aopguard/internal/testpki"
)

// FuzzAllowRules: hash parsing accepts exactly 32 bytes in hex or base64,
// and a leaf matches a rule set built from its own properties and from
// the fuzzed input exactly when one of the rules is its own.
func FuzzAllowRules(f *testing.F) {
	ca := testpki.CA(f, "fuzz CA")
	leaf := testpki.New(f, ca, testpki.Options{CN: "edge.example.net", DNS: []string{"origin.example.net"}})
	own := sha256.Sum256(leaf.Cert.Raw)
	f.Add(hex.EncodeToString(own[:]), "edge.example.net", "origin.example.net")
	f.Add("9A:1A:C2", "EDGE.example.net", "ORIGIN.EXAMPLE.NET")
	f.Add("mhrCtL4V+fJ+7iCnNMuk6YmPYQAbO9fIS2m1aj4lork=", "", "example.net")
	f.Fuzz(func(t *testing.T, hash, cn, dns string) {
		var r AllowRules
		if h, err := ParseHash(hash); err == nil {
			clean := strings.ReplaceAll(strings.TrimSpace(hash), ":", "")
			if len(clean) != 64 && len(strings.TrimSpace(hash)) != 44 {
				t.Fatalf("ParseHash(%q) accepted an input of the wrong length", hash)
			}
			r.SHA256 = append(r.SHA256, h)
		}
		if cn != "" {
			r.CN = append(r.CN, cn)
		}
		if dns != "" {
			r.DNS = append(r.DNS, dns)
		}
		want := r.Empty() ||
			(len(r.SHA256) > 0 && r.SHA256[0] == own) ||
			cn == "edge.example.net" ||
			strings.EqualFold(dns, "origin.example.net")
		if got := r.Match(leaf.Cert); got != want {
			t.Fatalf("Match(%+v) = %v, want %v", r, got, want)
		}
	})
}

// addrConn gives a pipe the TCP addresses the preamble expects.
type addrConn struct{ net.Conn }

func (addrConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000} }

// FuzzPreamble feeds arbitrary first bytes to the accept path, from a
// peer trusted to send a PROXY header and from one that is not: no panic;
// a connection is handed on only with a whole first TLS record pending,
// exactly the bytes that followed the header; everything else is a
// RefusedError with one of the known reasons.
func FuzzPreamble(f *testing.F) {
	f.Add([]byte("\x16\x03\x01\x00\x05hello"), false)
	f.Add([]byte("PROXY TCP4 203.0.113.7 192.0.2.1 1 443\r\n\x16\x03\x01\x00\x01x"), true)
	f.Add([]byte("PROXY TCP4 203.0.113.7 192.0.2.1 1 443\r\n\x16\x03\x01\x00\x01x"), false)
	f.Add(append([]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xcb\x00\x71\x07\xc0\x00\x02\x01\x00\x01\x01\xbb"), "\x16\x03\x01\x00\x00"...), true)
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), false)
	f.Add([]byte("\x00\x01"), false)
	f.Fuzz(func(t *testing.T, in []byte, trusted bool) {
		opts := ServerOptions{HandshakeTimeout: time.Second}
		if trusted {
			opts.ProxyProtocol = &ProxyProtocol{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, Timeout: time.Second}
		}
		s := NewServer(func() *Set { return nil }, opts)
		client, server := net.Pipe()
		defer client.Close()
		go func() {
			client.Write(in)
			client.Close() // the end of the peer's bytes (a pipe has no half-close)
		}()
		tc := &trackedConn{Conn: addrConn{server}}
		err := s.preamble(context.Background(), tc)
		defer tc.Close()
		if err != nil {
			var re *RefusedError
			if !errors.As(err, &re) || !slices.Contains(RefusedReasons, re.Reason) {
				t.Fatalf("error %v is not a RefusedError with a known reason", err)
			}
			return
		}
		p := tc.pending
		if len(p) < 5 || p[0] != 0x16 || len(p) < 5+min(int(p[3])<<8|int(p[4]), maxHelloRecord) {
			t.Fatalf("handed on with %d bytes pending: % x", len(p), p[:min(len(p), 16)])
		}
		if !bytes.Contains(in, p) {
			t.Fatalf("pending bytes are not what the peer sent")
		}
		if !trusted && !bytes.HasPrefix(in, p) {
			t.Fatalf("an untrusted peer's bytes before the record were skipped")
		}
	})
}
