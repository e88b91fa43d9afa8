package tlsconfig

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"
)

// What happens on a connection before its TLS handshake, off any handshake
// slot: the PROXY protocol header (from trusted load balancers), then the
// whole ClientHello, in as many TLS records as the client split it into.
// Only a connection that has sent all of it competes for MaxHandshakes, so
// idle or slow TCP connections cannot keep real clients out; what they hold
// meanwhile (a goroutine, a socket, a MaxConnections slot, the bytes they
// sent, at most maxPreamble) is bounded by the deadlines below. A first byte that cannot start a TLS
// record is answered here: plain HTTP gets a 400 over plain HTTP, anything
// else is closed.

// ProxyProtocol configures the PROXY protocol (HAProxy's, v1 and v2) on a
// Server's listener.
type ProxyProtocol struct {
	// Trusted are the peers (load balancers) whose connections must open
	// with a PROXY header; the address it carries is the client for
	// everything downstream. A header from any other peer is refused.
	Trusted []netip.Prefix
	// Timeout bounds the wait for the header; 0 means 5s.
	Timeout time.Duration
}

// DefaultProxyTimeout is ProxyProtocol.Timeout when none is given.
const DefaultProxyTimeout = 5 * time.Second

func (p *ProxyProtocol) trusts(a netip.Addr) bool {
	if p == nil {
		return false
	}
	for _, pfx := range p.Trusted {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}

// Reasons for closing a connection before its TLS handshake
// (RefusedError.Reason).
const (
	// RefusedProxyUntrusted: a PROXY header from a peer outside
	// ProxyProtocol.Trusted (a spoofing attempt, or a balancer missing
	// from the list).
	RefusedProxyUntrusted = "proxy_untrusted"
	// RefusedProxyMissing: a trusted peer sent no PROXY header within
	// ProxyProtocol.Timeout.
	RefusedProxyMissing = "proxy_missing"
	// RefusedProxyInvalid: a trusted peer sent a malformed PROXY header.
	RefusedProxyInvalid = "proxy_invalid"
	// RefusedPlainHTTP: plain HTTP sent to the TLS port; answered 400.
	RefusedPlainHTTP = "plain_http"
	// RefusedNotTLS: a first byte that starts neither TLS nor HTTP.
	RefusedNotTLS = "not_tls"
	// RefusedNoHello: no complete ClientHello within HandshakeTimeout (an
	// idle or slow connection), the peer left, or what it sent cannot be a
	// ClientHello (another handshake message, one over maxClientHello, a
	// record over 2^14 bytes or not of the handshake type).
	RefusedNoHello = "no_hello"
)

// RefusedReasons lists every RefusedError.Reason.
var RefusedReasons = []string{RefusedProxyUntrusted, RefusedProxyMissing, RefusedProxyInvalid, RefusedPlainHTTP, RefusedNotTLS, RefusedNoHello}

// RefusedError is the error of a connection closed before its TLS
// handshake began.
type RefusedError struct {
	// Reason is one of RefusedReasons.
	Reason string
	// Peer is the TCP peer's address (the load balancer's, if any).
	Peer netip.Addr
	// Log is true for the first refusal of Peer for Reason within
	// refusalLogEvery: logging only those keeps a flood to one line per
	// peer per minute.
	Log bool
	// Err is the underlying cause, if any (a read error, a PROXY header
	// parse error, context.DeadlineExceeded).
	Err error
}

var refusedText = map[string]string{
	RefusedProxyUntrusted: "PROXY protocol header from a peer not in proxy_protocol.trusted",
	RefusedProxyMissing:   "no PROXY protocol header from a trusted peer",
	RefusedProxyInvalid:   "malformed PROXY protocol header",
	RefusedPlainHTTP:      "plain HTTP sent to the TLS port",
	RefusedNotTLS:         "not TLS",
	RefusedNoHello:        "no ClientHello",
}

func (e *RefusedError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("aopguard: %s: %v", refusedText[e.Reason], e.Err)
	}
	return "aopguard: " + refusedText[e.Reason]
}

func (e *RefusedError) Unwrap() error { return e.Err }

// maxHelloRecord bounds each record read before the handshake: a TLS
// plaintext record carries at most 2^14 bytes; a larger one is refused.
const maxHelloRecord = 1 << 14

// maxClientHello bounds the ClientHello message itself (its 24-bit length
// could announce 16 MB). Real ones are a few KB; one with a large
// post-quantum key share and a resumption ticket stays far below 64 KiB.
const maxClientHello = 64 << 10

// maxPreamble bounds the bytes buffered per connection before its
// handshake: the ClientHello with its record headers (and a little slack
// for a client that splits it into many records, or bytes left after a
// PROXY header). A connection that would need more is refused.
const maxPreamble = 4 + maxClientHello + 4096

// recordHeader and handshakeHeader are the lengths of a TLS record header
// (type, version, 16-bit length) and a handshake message header (type,
// 24-bit length).
const (
	recordHeader    = 5
	handshakeHeader = 4
	typeClientHello = 1
)

// exactHello: a first ClientHello record up to this size gets a buffer of
// its size at once (one with a post-quantum key share and a resumption
// ticket, which carries the client's certificate, is 2 to 3 KB); a larger
// one, and any further record, grows the buffer (doubling) as bytes
// arrive. So a connection that announces a ClientHello and stalls holds
// at most max(exactHello, twice what it sent), never over maxPreamble,
// until handshake_timeout.
const exactHello = 4096

// readChunk is the most readAvailable takes in one system call: a whole
// ClientHello with a post-quantum key share and a resumption ticket (2 to
// 3 KB), or a client's certificate flight.
const readChunk = 4096

// plainHTTPAnswer is what plain HTTP on the TLS port gets, as nginx does.
const plainHTTPBody = "400 bad request: this port speaks HTTPS; the request was sent as plain HTTP (use https://)\n"

var plainHTTPAnswer = []byte(fmt.Sprintf("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"+
	"Content-Length: %d\r\nConnection: close\r\n\r\n%s", len(plainHTTPBody), plainHTTPBody))

// preamble runs before the handshake slot is taken: the PROXY header, if
// the peer is trusted to send one, then every TLS record up to the end of
// the ClientHello, which it keeps in t.pending for crypto/tls. A non-nil error is a *RefusedError
// (or ctx's error) and the connection is closed.
func (s *Server) preamble(ctx context.Context, t *trackedConn) error {
	raw := t.Conn
	peer := addrOf(raw.RemoteAddr())
	stop := context.AfterFunc(ctx, func() { raw.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	refuse := func(reason string, err error) error {
		if ctx.Err() != nil {
			err = ctx.Err()
		} else if errors.Is(err, os.ErrDeadlineExceeded) {
			err = context.DeadlineExceeded
		}
		t.Close()
		return &RefusedError{Reason: reason, Peer: peer, Log: s.refusals.first(peer, reason, time.Now()), Err: err}
	}

	var buf []byte
	if pp := s.opts.ProxyProtocol; pp.trusts(peer) {
		raw.SetReadDeadline(time.Now().Add(pp.Timeout))
		br := bufio.NewReaderSize(raw, 256)
		h, err := proxyproto.Read(br)
		switch {
		case ctx.Err() != nil:
			return refuse(RefusedProxyMissing, ctx.Err())
		case errors.Is(err, proxyproto.ErrNoProxyProtocol), errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, io.EOF):
			// None, too slow (bounded by pp.Timeout), or the peer left.
			return refuse(RefusedProxyMissing, err)
		case err != nil:
			return refuse(RefusedProxyInvalid, err)
		}
		// LOCAL (the balancer's own health checks) and UNKNOWN carry no
		// client: the connection is the balancer's.
		if src, ok := h.SourceAddr.(*net.TCPAddr); ok && h.Command.IsProxy() {
			t.remote = src
			t.info.Proxy = peer
		}
		if n := br.Buffered(); n > 0 {
			rest, _ := br.Peek(n)
			buf = append(make([]byte, 0, max(n, 512)), rest...)
		}
	}

	raw.SetReadDeadline(time.Now().Add(s.opts.HandshakeTimeout))
	var err error
	if len(buf) == 0 {
		// Wait holding no buffer, then take what has arrived (usually the
		// whole ClientHello) in one read.
		var ok bool
		if buf, ok, err = readAvailable(raw, 512); ok && err != nil {
			return refuse(RefusedNoHello, err)
		}
	}
	if buf, err = fill(raw, buf, 1); err != nil {
		return refuse(RefusedNoHello, err)
	}
	switch c := buf[0]; {
	case c == 0x16: // handshake record
		if buf, err = s.readHello(raw, buf); err != nil {
			return refuse(RefusedNoHello, err)
		}
	case c == proxyproto.SIGV1[0] || c == proxyproto.SIGV2[0]:
		// "PROXY" or the v2 signature's "\r\n\r\n\x00" from a peer not
		// trusted to send it; 'P' may be POST, PUT or PATCH too.
		buf, err = fill(raw, buf, 5)
		if len(buf) >= 5 && (string(buf[:5]) == string(proxyproto.SIGV1) || string(buf[:5]) == string(proxyproto.SIGV2[:5])) {
			return refuse(RefusedProxyUntrusted, nil)
		}
		if c == '\r' {
			return refuse(RefusedNotTLS, err)
		}
		return s.plainHTTP(t, refuse)
	case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		return s.plainHTTP(t, refuse)
	default:
		return refuse(RefusedNotTLS, nil)
	}
	raw.SetReadDeadline(time.Time{})
	t.pending = buf
	return nil
}

// readHello reads handshake records into buf until they hold a whole
// ClientHello: a client may split it over several records, and one that
// sends only part of it must not take a handshake slot. It refuses what
// cannot be a ClientHello, and bounds buf by maxPreamble.
func (s *Server) readHello(raw net.Conn, buf []byte) ([]byte, error) {
	var hs [handshakeHeader]byte
	got, need := 0, handshakeHeader // handshake payload bytes read, and wanted
	for off := 0; got < need; {
		var err error
		if buf, err = fill(raw, buf, off+recordHeader); err != nil {
			return buf, err
		}
		if buf[off] != 0x16 {
			return buf, fmt.Errorf("a record of type %d inside the ClientHello", buf[off])
		}
		n := int(buf[off+3])<<8 | int(buf[off+4])
		if n > maxHelloRecord {
			return buf, fmt.Errorf("a handshake record of %d bytes, over the 2^14 limit", n)
		}
		end := off + recordHeader + n
		if end > maxPreamble {
			return buf, fmt.Errorf("the ClientHello's records exceed %d bytes", maxPreamble)
		}
		if off == 0 && cap(buf) < end && end <= exactHello {
			buf = append(make([]byte, 0, end), buf...)
		}
		if buf, err = fill(raw, buf, end); err != nil {
			return buf, err
		}
		// Only the message header (its first 4 bytes, which may straddle
		// records) is looked at; the rest is counted, not scanned.
		if got < handshakeHeader {
			copy(hs[got:], buf[off+recordHeader:end])
			if got+n >= handshakeHeader {
				if hs[0] != typeClientHello {
					return buf, fmt.Errorf("handshake message of type %d, not a ClientHello", hs[0])
				}
				l := int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])
				if l > maxClientHello {
					return buf, fmt.Errorf("a ClientHello of %d bytes, over the %d limit", l, maxClientHello)
				}
				need = handshakeHeader + l
			}
		}
		got += n
		off = end
	}
	return buf, nil
}

// plainHTTP answers a plain HTTP request on the TLS port with a 400 over
// plain HTTP, then closes without losing the answer.
func (s *Server) plainHTTP(t *trackedConn, refuse func(string, error) error) error {
	t.Conn.SetWriteDeadline(time.Now().Add(lingerTime))
	t.Conn.Write(plainHTTPAnswer)
	t.LingerClose()
	return refuse(RefusedPlainHTTP, nil)
}

// fill reads from c until buf holds at least n bytes (it may read more:
// what follows stays in the buffer for crypto/tls). It grows buf as bytes
// arrive, doubling from 512, so a peer that announces a large record but
// sends little holds little memory; a typical ClientHello takes one read.
func fill(c net.Conn, buf []byte, n int) ([]byte, error) {
	for len(buf) < n {
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(max(2*cap(buf), 512), max(n, 512)))
			copy(nb, buf)
			buf = nb
		}
		m, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err != nil && len(buf) < n {
			return buf, err
		}
	}
	return buf, nil
}

func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// Refusal log limiting: at most one log line per peer and reason per
// refusalLogEvery, remembering at most maxRefusalPeers peers (beyond that,
// new peers are not logged until entries age out; they are still counted).
const (
	refusalLogEvery = time.Minute
	maxRefusalPeers = 1024
)

type refusalKey struct {
	peer   netip.Addr
	reason string
}

type refusalLog struct {
	mu     sync.Mutex
	last   map[refusalKey]time.Time
	pruned time.Time
}

// first reports whether a refusal of peer for reason at now should be
// logged, and remembers it.
func (r *refusalLog) first(peer netip.Addr, reason string, now time.Time) bool {
	k := refusalKey{peer, reason}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		r.last = map[refusalKey]time.Time{}
	}
	if at, ok := r.last[k]; ok && now.Sub(at) < refusalLogEvery {
		return false
	}
	if len(r.last) >= maxRefusalPeers {
		if now.Sub(r.pruned) < time.Second {
			return false // full, and pruned a moment ago: stay bounded in CPU too
		}
		r.pruned = now
		for old, at := range r.last {
			if now.Sub(at) >= refusalLogEvery {
				delete(r.last, old)
			}
		}
		if len(r.last) >= maxRefusalPeers {
			return false
		}
	}
	r.last[k] = now
	return true
}
