package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Transport is an http.RoundTripper for one upstream: a pool of
// persistent HTTP/1.1 connections, each used by one request at a time in
// the caller's goroutine. http.Transport hands every request to two
// goroutines per connection and back through channels; for a sidecar that
// talks to one app over loopback, that hand-off was the largest part of
// the proxy's cost per request.
type Transport struct {
	dial           func(ctx context.Context) (net.Conn, error)
	headerTimeout  time.Duration // for the response head; 0: none
	maxHeaderBytes int64

	mu     sync.Mutex
	idle   []*upConn // most recently used last
	closed bool
	reaper *time.Timer // armed while idle is not empty
}

// TransportOptions configure a Transport.
type TransportOptions struct {
	// Network and Address are dialed for each new connection ("tcp" and
	// host:port, or "unix" and a socket path).
	Network, Address string
	// TLS, if set, makes connections TLS clients with this configuration
	// (its NextProtos should offer only "http/1.1").
	TLS *tls.Config
	// Dial, if set, replaces dialing Network and Address (and TLS).
	Dial func(ctx context.Context) (net.Conn, error)
	// ResponseHeaderTimeout bounds the wait for a response head after
	// the request was sent, and each write of its body (0: none).
	ResponseHeaderTimeout time.Duration
	// MaxResponseHeaderBytes bounds a response head (default 1 MiB).
	MaxResponseHeaderBytes int64
}

// Bounds of the upstream pool.
const (
	maxIdleUpstream = 256 // a sidecar talks to one app: keep enough to absorb bursts
	idleUpstreamFor = 90 * time.Second
	// max1xx bounds informational responses before the final one.
	max1xx = 8
)

// upConn is one upstream connection with its buffers.
type upConn struct {
	net.Conn
	lr        headReader
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
	reused    bool
	interrupt func()  // ends a read in progress; made once, for every request's cancellation
	peek      *peeker // see quiet
}

// NewTransport returns a Transport.
func NewTransport(opts TransportOptions) *Transport {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	t := &Transport{headerTimeout: opts.ResponseHeaderTimeout, maxHeaderBytes: opts.MaxResponseHeaderBytes, dial: opts.Dial}
	if t.maxHeaderBytes <= 0 {
		t.maxHeaderBytes = 1 << 20
	}
	network, addr, cfg := opts.Network, opts.Address, opts.TLS
	switch {
	case t.dial != nil:
	case cfg != nil:
		t.dial = func(ctx context.Context) (net.Conn, error) {
			raw, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			c := tls.Client(raw, cfg)
			hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := c.HandshakeContext(hctx); err != nil {
				raw.Close()
				return nil, err
			}
			return c, nil
		}
	default:
		t.dial = func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, network, addr) }
	}
	return t
}

// get returns a pooled connection, or dials a new one (always, when
// fresh). A pooled connection is reused only if nothing has arrived on it
// since its last response: neither the app's close nor stray bytes, which
// would otherwise be read as the next request's response.
func (t *Transport) get(ctx context.Context, fresh bool) (*upConn, error) {
	for !fresh {
		t.mu.Lock()
		n := len(t.idle)
		if n == 0 {
			t.mu.Unlock()
			break
		}
		pc := t.idle[n-1]
		t.idle[n-1] = nil
		t.idle = t.idle[:n-1]
		t.mu.Unlock()
		if time.Since(pc.idleSince) < idleUpstreamFor && pc.quiet() {
			return pc, nil
		}
		pc.Close()
	}
	c, err := t.dial(ctx)
	if err != nil {
		return nil, err
	}
	pc := &upConn{Conn: c, lr: headReader{r: c, n: -1}}
	pc.br = bufio.NewReaderSize(&pc.lr, 4<<10)
	pc.interrupt = func() { pc.SetReadDeadline(time.Unix(1, 0)) }
	pc.bw = bufio.NewWriterSize(c, 4<<10)
	return pc, nil
}

// put returns a connection whose exchange completed cleanly to the pool.
func (t *Transport) put(pc *upConn) {
	pc.idleSince = time.Now()
	pc.reused = true
	t.mu.Lock()
	if t.closed || len(t.idle) >= maxIdleUpstream {
		t.mu.Unlock()
		pc.Close()
		return
	}
	t.idle = append(t.idle, pc)
	if t.reaper == nil {
		t.reaper = time.AfterFunc(reapEvery, t.reap)
	}
	t.mu.Unlock()
}

// reapEvery is how often idle connections are checked for a close from
// the app (or their age), so that a connection the app closed does not sit
// in the pool, holding a descriptor, until a request happens to pick it.
var reapEvery = 2 * time.Second

// reap closes the pooled connections the app closed, sent stray bytes on,
// or that idled past idleUpstreamFor, and re-arms itself while any remain.
func (t *Transport) reap() {
	now := time.Now()
	var drop []*upConn
	t.mu.Lock()
	keep := t.idle[:0]
	for _, pc := range t.idle {
		if now.Sub(pc.idleSince) < idleUpstreamFor && pc.quiet() {
			keep = append(keep, pc)
		} else {
			drop = append(drop, pc)
		}
	}
	clear(t.idle[len(keep):])
	t.idle = keep
	if len(t.idle) > 0 && !t.closed {
		t.reaper.Reset(reapEvery)
	} else {
		t.reaper = nil
	}
	t.mu.Unlock()
	for _, pc := range drop {
		pc.Close()
	}
}

// CloseIdleConnections closes every pooled connection; the transport
// stays usable.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, pc := range idle {
		pc.Close()
	}
}

// Close retires the transport (its upstream is no longer used): pooled
// connections are closed now, those in use when they come back.
func (t *Transport) Close() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.CloseIdleConnections()
}

// RoundTrip sends req on a pooled connection and returns the response
// head; the body streams from the connection, which goes back to the pool
// once the body has been read to its end. A request that fails on a reused
// connection before the app can have acted on it is retried once, on a new
// connection: when it could not be sent whole, or when no byte of an
// answer came back and the request is one a client may repeat (GET, HEAD,
// OPTIONS, TRACE without a body, or one with an Idempotency-Key).
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !httpguts.ValidHostHeader(req.Host) {
		return nil, fmt.Errorf("invalid Host %q", req.Host)
	}
	ctx := req.Context()
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			// The client is gone (an HTTP/2 stream reset, say): nothing
			// to send, and above all no connection to dial for it.
			return nil, err
		}
		pc, err := t.get(ctx, attempt > 0)
		if err != nil {
			return nil, err
		}
		if ctx.Err() != nil {
			// Cancelled while dialing: the connection is clean, keep it.
			t.put(pc)
			return nil, ctx.Err()
		}
		res, err := t.exchange(pc, req)
		if err == nil {
			return res, nil
		}
		pc.Close()
		var retry *retryableError
		if errors.As(err, &retry) {
			if attempt == 0 && pc.reused && req.Body == nil && (retry.unsent || replayable(req)) {
				continue
			}
			err = retry.err
		}
		return nil, err
	}
}

// replayable reports whether sending req twice is harmless, as net/http's
// client judges it.
func replayable(req *http.Request) bool {
	switch req.Method {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	_, a := req.Header["Idempotency-Key"]
	_, b := req.Header["X-Idempotency-Key"]
	return a || b
}

// retryableError marks a failure on a connection before any byte of the
// response arrived; unsent when the request did not go out whole.
type retryableError struct {
	err    error
	unsent bool
}

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

// exchange writes req on pc and reads the response head.
func (t *Transport) exchange(pc *upConn, req *http.Request) (*http.Response, error) {
	if err := writeRequest(pc, req, t.headerTimeout); err != nil {
		if !errors.Is(err, errBodyWrite) {
			return nil, &retryableError{err: err, unsent: true}
		}
		if errors.Is(err, errClientBody) {
			return nil, err
		}
		// The app may have answered without reading the whole body (a
		// 413, say) and closed: that answer, already sent, is the one to
		// pass on.
		pc.SetReadDeadline(time.Now().Add(time.Second))
		if res, rerr := t.readHead(pc, req); rerr == nil {
			res.Close = true
			if b, ok := res.Body.(*upBody); ok {
				b.keep = false
			}
			return res, nil
		}
		return nil, err
	}
	if t.headerTimeout > 0 {
		pc.SetReadDeadline(time.Now().Add(t.headerTimeout))
	}
	ctx := req.Context()
	// A client that goes away cancels its request: stop waiting for the
	// app then, for the head or the body; closing the connection tells
	// the app.
	stop := afterDone(ctx, pc.interrupt)
	if stop == nil {
		stop = func() bool { return true }
	}
	// The app has only just been handed the request: read now and the read
	// finds nothing (EAGAIN), parks, and reads again when the answer
	// comes. Letting the other ready goroutines (other requests) run first
	// means the answer has usually arrived by the first read.
	runtime.Gosched()
	res, err := t.readHead(pc, req)
	if err == nil && ctx.Err() != nil {
		// Cancelled while the head was being parsed: readHead cleared the
		// deadline the cancellation had set. The body read must end too.
		pc.SetReadDeadline(time.Unix(1, 0))
	}
	if err != nil {
		stop()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			return nil, errHeaderTimeout
		}
		return nil, err
	}
	if b, ok := res.Body.(*upBody); ok {
		b.stop = stop
	} else {
		stop()
	}
	return res, nil
}

// errHeaderTimeout is the error of an app that did not send its response
// head within upstream_timeout; a net.Error with Timeout, so it is
// answered 504.
var errHeaderTimeout error = timeoutError("timeout awaiting response headers")

type timeoutError string

func (e timeoutError) Error() string { return string(e) }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// readHead reads the final response head, passing informational (1xx)
// responses to the request's httptrace.ClientTrace, which is how
// ReverseProxy forwards them.
func (t *Transport) readHead(pc *upConn, req *http.Request) (*http.Response, error) {
	trace := httptrace.ContextClientTrace(req.Context())
	for n := 0; ; n++ {
		buffered := pc.br.Buffered()
		pc.lr.start(pc.br, t.maxHeaderBytes)
		res, err := http.ReadResponse(pc.br, req)
		left := pc.lr.n
		facts := scanHead(pc.lr.stop(pc.br))
		pc.lr.release()
		if err != nil {
			if left == 0 {
				return nil, fmt.Errorf("upstream response head exceeds %d bytes", t.maxHeaderBytes)
			}
			// ReadResponse reports a connection that ended before the
			// first byte as ErrUnexpectedEOF too: count the bytes.
			nothing := n == 0 && buffered == 0 && left == t.maxHeaderBytes
			if nothing && (err == io.EOF || err == io.ErrUnexpectedEOF || errors.Is(err, syscall.ECONNRESET)) {
				return nil, &retryableError{err: err}
			}
			return nil, err
		}
		if msg := facts.framingError(res.ProtoMinor); msg != "" {
			// nginx answers 502 to each; a lenient parser further
			// down could read such a response differently.
			return nil, fmt.Errorf("upstream response: %s", msg)
		}
		if k := badFieldName(res.Header); k != "" {
			// RFC 9112 5.1: no whitespace between a field name and its
			// colon; net/textproto keeps "Content-Length " as a name of
			// its own, which would reach the client.
			return nil, fmt.Errorf("upstream response: invalid header name %q", clip(k))
		}
		if res.StatusCode == http.StatusSwitchingProtocols {
			if req.Header.Get("Upgrade") == "" {
				return nil, errors.New("upstream switched protocols unasked")
			}
			pc.SetReadDeadline(time.Time{})
			res.Body = &upgradeBody{pc: pc}
			return res, nil
		}
		if res.StatusCode >= 200 {
			pc.SetReadDeadline(time.Time{})
			res.Body = &upBody{t: t, pc: pc, res: res, body: res.Body, keep: !res.Close && !req.Close, stop: func() bool { return true }}
			return res, nil
		}
		if n == max1xx {
			return nil, fmt.Errorf("upstream sent more than %d informational responses", max1xx)
		}
		if trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(res.StatusCode, textproto.MIMEHeader(res.Header)); err != nil {
				return nil, err
			}
		}
	}
}

// Request headers writeRequest frames itself.
var framingHeaders = map[string]bool{"Host": true, "User-Agent": true, "Content-Length": true, "Transfer-Encoding": true, "Trailer": true}

// errBodyWrite marks a failure to send the request body to the app;
// errClientBody one to read it from the client.
var (
	errBodyWrite  = errors.New("sending the request body")
	errClientBody = errors.New("reading the request body from the client")
)

// writeRequest writes req on pc in HTTP/1.1 wire format: the framing is
// derived from req.ContentLength and req.Body, never copied from the
// client's own Content-Length or Transfer-Encoding headers. Each write of
// body data must complete within timeout (an app that stops reading).
func writeRequest(pc *upConn, req *http.Request, timeout time.Duration) error {
	bw := pc.bw
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(req.URL.RequestURI())
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	if ua := req.Header.Get("User-Agent"); ua != "" {
		writeField(bw, "User-Agent", ua)
	}
	chunked := req.Body != nil && req.ContentLength < 0
	switch {
	case chunked:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
		if len(req.Trailer) > 0 {
			writeField(bw, "Trailer", trailerNames(req.Trailer))
		}
	case req.Body != nil || req.ContentLength > 0 || methodWantsLength(req.Method):
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), max(req.ContentLength, 0), 10))
		bw.WriteString("\r\n")
	}
	writeFields(bw, req.Header, framingHeaders)
	bw.WriteString("\r\n")
	if req.Body != nil {
		if err := writeBody(pc, req, chunked, timeout); err != nil {
			return fmt.Errorf("%w: %w", errBodyWrite, err)
		}
		pc.SetWriteDeadline(time.Time{})
		return nil
	}
	return bw.Flush()
}

// writeBody copies the request body to the app, chunked or exactly
// req.ContentLength bytes, then the trailer of a chunked body (whose values
// the body's reader filled in at its end).
func writeBody(pc *upConn, req *http.Request, chunked bool, timeout time.Duration) error {
	bw := pc.bw
	buf := copyBuffers.Get().(*[copyBufferSize]byte)
	defer copyBuffers.Put(buf)
	var body io.Reader = req.Body
	if !chunked {
		body = io.LimitReader(req.Body, req.ContentLength)
	}
	var sent int64
	for {
		n, err := body.Read(buf[:])
		if n > 0 {
			if timeout > 0 {
				pc.SetWriteDeadline(time.Now().Add(timeout))
			}
			if chunked {
				bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(n), 16))
				bw.WriteString("\r\n")
			}
			bw.Write(buf[:n])
			if chunked {
				bw.WriteString("\r\n")
			}
			// Flush each piece: the app sees the body as it arrives.
			if werr := bw.Flush(); werr != nil {
				return werr
			}
			sent += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: %w", errClientBody, err)
		}
	}
	if !chunked {
		if sent < req.ContentLength {
			return fmt.Errorf("%w: %w", errClientBody, io.ErrUnexpectedEOF)
		}
		return nil
	}
	if k := badFieldName(req.Trailer); k != "" {
		// Cut off rather than terminated: the app never sees a whole body.
		return fmt.Errorf("%w: invalid trailer name %q", errClientBody, clip(k))
	}
	bw.WriteString("0\r\n")
	if err := req.Trailer.Write(bw); err != nil {
		return err
	}
	bw.WriteString("\r\n")
	return bw.Flush()
}

// methodWantsLength reports whether a bodiless request of this method
// should say "Content-Length: 0" (as net/http's client does), since some
// servers refuse a POST without one.
func methodWantsLength(m string) bool { return m == "POST" || m == "PUT" || m == "PATCH" }

func trailerNames(h http.Header) string {
	var b []byte
	for k := range h {
		if len(b) > 0 {
			b = append(b, ", "...)
		}
		b = append(b, k...)
	}
	return string(b)
}

// upBody is a response body that returns its connection to the pool when
// read to its end, and closes it when abandoned before that.
type upBody struct {
	t    *Transport
	pc   *upConn
	res  *http.Response // its Trailer is filled in at the end of the body
	body io.ReadCloser
	keep bool // the exchange allows another request on the connection
	done bool
	// stop disarms the cancellation of the request; false when it has
	// fired (or is firing): the connection's deadline is spoilt.
	stop func() bool
}

func (b *upBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.body.Read(p)
	if err == io.EOF {
		if k := badFieldName(b.res.Trailer); k != "" {
			err = fmt.Errorf("upstream response: invalid trailer name %q", clip(k))
		}
	}
	if err != nil {
		b.done = true
		if b.stop() && err == io.EOF && b.keep && b.pc.br.Buffered() == 0 {
			b.t.put(b.pc)
		} else {
			b.pc.Close()
		}
	}
	return n, err
}

func (b *upBody) Close() error {
	if !b.done {
		b.done = true
		b.stop()
		b.pc.Close()
	}
	return nil
}

// upgradeBody is the connection after a 101 response, as ReverseProxy
// wants it: readable (including what was buffered), writable, closable.
type upgradeBody struct{ pc *upConn }

func (u *upgradeBody) Read(p []byte) (int, error)  { return u.pc.br.Read(p) }
func (u *upgradeBody) Write(p []byte) (int, error) { return u.pc.Write(p) }
func (u *upgradeBody) Close() error                { return u.pc.Close() }

// CloseWrite passes a half-close on: ReverseProxy uses it when the client
// is done sending but the app is not done answering.
func (u *upgradeBody) CloseWrite() error {
	if cw, ok := u.pc.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return u.pc.Close()
}

// copyBufferSize is the size of the buffers request bodies are copied
// to the app with.
const copyBufferSize = 32 << 10

// copyBuffers holds array pointers rather than slices: boxing a slice for
// sync.Pool would allocate on every Put.
var copyBuffers = sync.Pool{New: func() any { return new([copyBufferSize]byte) }}

// clip bounds a name quoted in an error.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
