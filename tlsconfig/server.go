package tlsconfig

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aopguard/aopguard/cfips"
)

// ConnInfo is what a Server learned about a connection during its handshake.
// It is written before the connection is returned by Accept and only read
// afterwards.
type ConnInfo struct {
	// Policy is the Policy the server name selected and the handshake was
	// judged under. A reload does not change it.
	Policy *Policy
	// SNI is the server name the client sent ("" for direct-to-IP).
	SNI string
	// Verdict is the client certificate's verdict under Policy.
	Verdict Verdict
	// Peer is the presented chain, leaf first (nil when none).
	Peer []*x509.Certificate
	// Resumed reports a resumed TLS session.
	Resumed bool
	// Version is the negotiated TLS version.
	Version uint16
	// CurveID is the negotiated key-agreement group (X25519MLKEM768 for a
	// post-quantum client such as Cloudflare's or Go's; 0 when none).
	CurveID tls.CurveID
	// Source classifies the peer address: cfips.Cloudflare or cfips.Other.
	Source string
	// Remote is the client's IP address: the TCP peer's, or the one a
	// PROXY protocol header from a trusted load balancer carried.
	Remote netip.Addr
	// Proxy is the load balancer's address when a PROXY header supplied
	// Remote (the zero Addr otherwise).
	Proxy netip.Addr
}

// Conn is a connection a Server's listener accepted: its TLS handshake
// has completed under the Policy its server name selected, and its
// ConnInfo (the policy and the verdict) is filled in. It is a *tls.Conn
// with what aopguard learned about it, so whoever serves it reads those
// facts from the type rather than from what lies under the TLS layer.
type Conn struct {
	*tls.Conn
	t *trackedConn
	// peerClosed is set once Read returned io.EOF: the peer sent
	// close_notify (or closed at a record boundary), so Close sends none.
	peerClosed atomic.Bool
}

// Read reads application data, noting when the peer has closed.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err == io.EOF {
		c.peerClosed.Store(true)
	}
	return n, err
}

// Close closes the connection. It sends close_notify first unless the peer
// has already closed its side (Read returned io.EOF), as nginx does: a
// client that closed is not reading, and the alert would only cost an
// encryption, a write and a timer and draw a reset. Everything that was
// written before still reaches it ahead of the FIN.
func (c *Conn) Close() error {
	if c.peerClosed.Load() {
		return c.t.Close()
	}
	return c.Conn.Close()
}

// KeepAlive turns on TCP keep-alive probes (Go's defaults: after 15s idle,
// every 15s, 9 times). The listener leaves them off, as nginx does: a
// connection serving HTTP ends at the server's idle timeout anyway, and
// the probes' four setsockopt calls per connection are a few percent of
// a full handshake's CPU. A connection handed to a long-lived protocol (a
// WebSocket) needs them to notice a peer that vanished without a FIN.
func (c *Conn) KeepAlive() error {
	if tc, ok := c.t.Conn.(*net.TCPConn); ok {
		return tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true})
	}
	return nil
}

// WaitReadable waits, without reading, until the client has sent more (or
// the read deadline passes, or the connection is closed: then it returns
// the error a read would). It is for a connection parked between
// requests: the wait takes a few hundred bytes of stack where a Read
// through crypto/tls takes over 2 KiB, so a goroutine parked in it keeps
// the smallest stack Go has. Call it only after a Read timed out having
// read nothing: crypto/tls then holds no whole record, and everything
// further comes from the socket. Where the socket cannot be watched (a
// PROXY protocol wrapper, a non-Unix system), it returns nil at once and
// the next Read does the waiting.
func (c *Conn) WaitReadable() error {
	if len(c.t.pending) > 0 {
		return nil
	}
	if tc, ok := c.t.Conn.(*net.TCPConn); ok {
		return waitReadable(tc)
	}
	return nil
}

// Info returns what the handshake learned: the Policy, the verdict, the
// peer's chain and address. It never changes once Accept returned c.
func (c *Conn) Info() *ConnInfo { return &c.t.info }

// TLS returns the *tls.Conn itself, for servers (net/http's HTTP/2) that
// need that type.
func (c *Conn) TLS() *tls.Conn { return c.Conn }

// LingerClose sends close_notify, then closes the socket without losing
// what was last sent while the peer may still be sending (see
// trackedConn.LingerClose): for a response sent with a request body left
// unread.
func (c *Conn) LingerClose() {
	c.Conn.CloseWrite() // close_notify; crypto/tls bounds the write itself
	c.t.LingerClose()
}

// Info returns the ConnInfo of a connection accepted from a Server's
// listener (a *Conn), or nil for any other connection.
func Info(c net.Conn) *ConnInfo {
	if cc, ok := c.(*Conn); ok {
		return cc.Info()
	}
	return nil
}

type trackedConn struct {
	net.Conn
	info         ConnInfo
	unrecognized bool // refused by strict host matching
	acme         bool // an ACME tls-alpn-01 validation
	release      func()
	closeOnce    sync.Once
	// remote replaces the TCP peer's address when a PROXY header gave the
	// client's; everything downstream sees it through RemoteAddr.
	remote net.Addr
	// pending holds what the preamble read (the first TLS record), served
	// to crypto/tls before the socket.
	pending []byte
	batch   recordBatch // see batch.go
	// handshaking is set while crypto/tls drives the handshake (only the
	// handshake's goroutine reads or writes it).
	handshaking bool
}

// Read serves the bytes the preamble read before reading the socket.
// During the handshake it takes whatever has arrived in one read:
// crypto/tls asks for a few hundred bytes at a time, so a client's
// certificate flight (1.5 to 2 KB with an RSA-2048 certificate) would
// otherwise take two.
func (t *trackedConn) Read(p []byte) (int, error) {
	if len(t.pending) == 0 && t.handshaking && len(p) < readChunk {
		buf, ok, err := readAvailable(t.Conn, 0)
		if ok {
			if err != nil {
				return 0, err
			}
			t.pending = buf
		}
	}
	if len(t.pending) > 0 {
		n := copy(p, t.pending)
		t.pending = t.pending[n:]
		if len(t.pending) == 0 {
			t.pending = nil
		}
		return n, nil
	}
	return t.Conn.Read(p)
}

// RemoteAddr is the client's address: the one a trusted PROXY header
// carried, else the TCP peer's.
func (t *trackedConn) RemoteAddr() net.Addr {
	if t.remote != nil {
		return t.remote
	}
	return t.Conn.RemoteAddr()
}

// LingerClose closes the connection without losing what was last sent to
// the peer while the peer may still be sending: closing a socket with
// unread data makes the kernel send a reset that can overtake it. So:
// half-close (FIN), discard what arrives until the peer closes too or
// lingerTime passes (bounded in bytes), then close. tlsconfig uses it
// after refusing a handshake; whoever serves the connection may use it
// (after its own close_notify) when it leaves a request body unread.
func (t *trackedConn) LingerClose() {
	if cw, ok := t.Conn.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		t.SetReadDeadline(time.Now().Add(lingerTime))
		io.Copy(io.Discard, io.LimitReader(t.Conn, lingerBytes))
	}
	t.Close()
}

// Close closes the connection and frees its slot under MaxConnections.
func (t *trackedConn) Close() error {
	err := t.Conn.Close()
	t.closeOnce.Do(func() {
		if t.release != nil {
			t.release()
		}
	})
	return err
}

// ServerOptions configure a Server.
type ServerOptions struct {
	// HandshakeTimeout bounds the wait for a connection's first TLS
	// record (its ClientHello), then each TLS handshake; default 10s.
	HandshakeTimeout time.Duration
	// Sink receives every handshake's outcome (Sink.Handshake), after it
	// ends; nil: none is reported.
	Sink Sink
	// Source classifies a peer address (see ConnInfo.Source); nil
	// classifies every peer as cfips.Other.
	Source func(remote netip.Addr) string
	// MaxConnections bounds open connections (0: no bound). At the bound
	// the listener stops accepting until one closes, leaving the rest in
	// the kernel's backlog.
	MaxConnections int
	// ACMETLS, if set, answers ClientHellos that offer only the
	// "acme-tls/1" protocol (an ACME CA validating a tls-alpn-01
	// challenge) before any client-certificate policy is chosen: the
	// validator presents no client certificate, even for a Require host.
	// Such connections are closed after the handshake, never served.
	ACMETLS *tls.Config
	// MaxHandshakes bounds handshakes in progress (0: no bound). A
	// connection competes for a slot only once its whole ClientHello has
	// arrived (in however many records), so idle or stalled connections
	// hold none. One that finds no free slot
	// within half of HandshakeTimeout is closed, so queueing and handshake
	// together stay bounded.
	MaxHandshakes int
	// ProxyProtocol, if set, requires a PROXY protocol header from the
	// peers it trusts. Without it, and from any other peer, a PROXY header
	// is refused (RefusedError).
	ProxyProtocol *ProxyProtocol
}

// ErrOverloaded is the handshake error of a connection closed because
// MaxHandshakes handshakes were in progress for half of HandshakeTimeout.
var ErrOverloaded = errors.New("aopguard: too many handshakes in progress")

// Server chooses a Policy for each ClientHello from the current Set and
// completes handshakes off the accept path, so that a slow or hostile client
// never delays others and every connection handed on has its Verdict.
type Server struct {
	current    func() *Set
	opts       ServerOptions
	base       *tls.Config
	handshakes chan struct{} // slots under MaxHandshakes; nil: unbounded
	refusals   refusalLog
}

// NewServer returns a Server that reads the current Set from current on
// every handshake, so a reload takes effect for the next ClientHello.
func NewServer(current func() *Set, opts ServerOptions) *Server {
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = 10 * time.Second
	}
	if pp := opts.ProxyProtocol; pp != nil && pp.Timeout <= 0 {
		cp := *pp
		cp.Timeout = DefaultProxyTimeout
		opts.ProxyProtocol = &cp
	}
	s := &Server{current: current, opts: opts}
	if opts.MaxHandshakes > 0 {
		s.handshakes = make(chan struct{}, opts.MaxHandshakes)
	}
	s.base = &tls.Config{
		MinVersion:         tls.VersionTLS12,
		GetConfigForClient: s.configForClient,
	}
	return s
}

// acmeTLSALPN is the ALPN protocol of ACME's tls-alpn-01 challenge (RFC 8737).
const acmeTLSALPN = "acme-tls/1"

// ErrACMEChallenge is the "error" of a connection that only served a
// tls-alpn-01 challenge certificate; it is never handed to HTTP.
var ErrACMEChallenge = errors.New("aopguard: served an ACME tls-alpn-01 challenge")

func (s *Server) configForClient(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	if s.opts.ACMETLS != nil && len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acmeTLSALPN {
		if t, ok := hello.Conn.(*trackedConn); ok {
			t.acme = true
			t.info.SNI = hello.ServerName
		}
		return s.opts.ACMETLS, nil
	}
	set := s.current()
	p, ok := set.Lookup(hello.ServerName)
	t, _ := hello.Conn.(*trackedConn)
	if t != nil {
		t.info.SNI = hello.ServerName
	}
	if !ok {
		if t != nil {
			t.unrecognized = true
		}
		return set.refuse, nil
	}
	if t != nil {
		t.info.Policy = p
	}
	return p.tls, nil
}

// UnknownHostError is the handshake error of a connection refused because
// its server name (or its lack of one) matches no configured host while
// strict_hosts (or allow_no_sni: false) is in force.
type UnknownHostError struct{ SNI string }

func (e *UnknownHostError) Error() string {
	if e.SNI == "" {
		return "aopguard: no server name (direct-to-IP) and allow_no_sni is off"
	}
	return "aopguard: server name matches no configured host (strict_hosts)"
}

// errNoClientCert is crypto/tls's text for a Require handshake without a
// certificate (it sends certificate_required, the proper alert, before any
// callback of ours runs). A test pins it.
const errNoClientCert = "client didn't provide a certificate"

// report gives a handshake's outcome to the Sink.
func (s *Server) report(info *ConnInfo, remote net.Addr, err error) {
	if s.opts.Sink != nil {
		s.opts.Sink.Handshake(Handshake{Info: info, Remote: remote, Err: err})
	}
}

// handshake reads the connection's preamble (see preamble), then runs
// its TLS handshake under a MaxHandshakes slot and fills in its ConnInfo.
func (s *Server) handshake(ctx context.Context, t *trackedConn) (*Conn, error) {
	t.info.Source = cfips.Other
	if err := s.preamble(ctx, t); err != nil {
		s.report(&t.info, t.RemoteAddr(), err)
		return nil, err
	}
	t.info.Remote = addrOf(t.RemoteAddr())
	if s.opts.Source != nil {
		t.info.Source = s.opts.Source(t.info.Remote)
	}
	if s.handshakes != nil {
		timer := time.NewTimer(s.opts.HandshakeTimeout / 2)
		select {
		case s.handshakes <- struct{}{}:
			timer.Stop()
			defer func() { <-s.handshakes }()
		case <-timer.C:
			t.Close()
			s.report(&t.info, t.RemoteAddr(), ErrOverloaded)
			return nil, ErrOverloaded
		case <-ctx.Done():
			timer.Stop()
			t.Close()
			return nil, ctx.Err()
		}
	}
	c := tls.Server(t, s.base)
	ctx, cancel := context.WithTimeout(ctx, s.opts.HandshakeTimeout)
	t.handshaking = true
	err := c.HandshakeContext(ctx)
	t.handshaking = false
	cancel()
	info := &t.info
	if err != nil {
		var rej *RejectError
		if t.unrecognized {
			err = &UnknownHostError{SNI: info.SNI}
		} else if errors.As(err, &rej) {
			info.Verdict, err = rej.Verdict, rej
		} else if info.Policy != nil && info.Policy.mode == Require && strings.Contains(err.Error(), errNoClientCert) {
			info.Verdict = info.Policy.VerifyTLS(nil, c.ConnectionState().Version)
			err = &RejectError{Policy: info.Policy, Verdict: info.Verdict}
		}
		if info.Policy != nil {
			cs := c.ConnectionState()
			info.Version, info.CurveID = cs.Version, cs.CurveID
		}
		s.report(info, t.RemoteAddr(), err)
		switch err.(type) {
		case *RejectError, *UnknownHostError:
			lingerClose(t)
		default:
			c.Close()
		}
		return nil, err
	}
	if t.acme {
		// The validator has what it came for: the challenge certificate.
		c.Close()
		s.report(info, t.RemoteAddr(), ErrACMEChallenge)
		return nil, ErrACMEChallenge
	}
	cs := c.ConnectionState()
	info.Peer = cs.PeerCertificates
	info.Resumed = cs.DidResume
	info.Version = cs.Version
	info.CurveID = cs.CurveID
	info.Verdict = info.Policy.VerifyTLS(cs.PeerCertificates, cs.Version)
	s.report(info, t.RemoteAddr(), nil)
	return &Conn{Conn: c, t: t}, nil
}

// Listener wraps inner: Accept returns only *Conn whose handshake has
// completed and whose ConnInfo is filled in. Handshakes run in
// their own goroutines. Closing the listener aborts handshakes in progress.
func (s *Server) Listener(inner net.Listener) net.Listener {
	ctx, cancel := context.WithCancel(context.Background())
	l := &listener{inner: inner, srv: s, ctx: ctx, cancel: cancel, conns: make(chan *Conn), done: make(chan struct{})}
	if s.opts.MaxConnections > 0 {
		l.slots = make(chan struct{}, s.opts.MaxConnections)
	}
	go l.acceptLoop()
	return l
}

type listener struct {
	inner  net.Listener
	srv    *Server
	ctx    context.Context
	cancel context.CancelFunc
	conns  chan *Conn
	done   chan struct{}
	once   sync.Once
	err    error         // set before done is closed
	slots  chan struct{} // under MaxConnections; nil: unbounded
}

func (l *listener) acceptLoop() {
	var backoff time.Duration
	for {
		if l.slots != nil {
			select {
			case l.slots <- struct{}{}:
			case <-l.done:
				return
			}
		}
		raw, err := l.inner.Accept()
		if err != nil {
			if l.slots != nil {
				<-l.slots
			}
			select {
			case <-l.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				l.shut(err)
				return
			}
			// Out of file descriptors and the like: back off, keep serving.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		t := &trackedConn{Conn: raw}
		if l.slots != nil {
			t.release = func() { <-l.slots }
		}
		go func() {
			c, err := l.srv.handshake(l.ctx, t)
			if err != nil {
				return
			}
			select {
			case l.conns <- c:
			case <-l.done:
				c.Close()
			}
		}()
	}
}

func (l *listener) shut(err error) {
	l.once.Do(func() {
		l.err = err
		close(l.done)
		l.cancel()
	})
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

func (l *listener) Close() error {
	err := l.inner.Close()
	l.shut(net.ErrClosed)
	return err
}

func (l *listener) Addr() net.Addr { return l.inner.Addr() }

// Bounds of LingerClose: long enough for a client that is still writing
// (curl, Go's client) to read the answer before it sees its write fail.
const (
	lingerTime  = time.Second
	lingerBytes = 16 << 20
)

// lingerClose closes a connection whose handshake we refused without
// losing the alert: under TLS 1.3 the client has already sent its request
// when the alert arrives, and a reset would leave the user with
// "connection reset" instead of "certificate required".
func lingerClose(t *trackedConn) { t.LingerClose() }
