package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sync/atomic"
	"time"
)

// h2Upstreams keeps the transports of HTTP/2 upstreams for Upstreams,
// which guards it with its mutex.
type h2Upstreams struct {
	// roots verifies the certificates of h2:// upstreams; nil: the
	// system's roots, as for https:// upstreams.
	roots      *x509.CertPool
	transports map[string]*h2Transport // by transportKey
}

// h2Transport returns the pooled transport of an h2c:// or h2:// upstream,
// creating it on first use; ok is false for any other scheme.
func (u *Upstreams) h2Transport(raw string, target *url.URL, timeout time.Duration) (t *h2Transport, ok bool) {
	if target.Scheme != "h2c" && target.Scheme != "h2" {
		return nil, false
	}
	key := transportKey(raw, timeout)
	u.mu.Lock()
	defer u.mu.Unlock()
	if t, ok := u.h2.transports[key]; ok {
		return t, true
	}
	if u.h2.transports == nil {
		u.h2.transports = map[string]*h2Transport{}
	}
	t = newH2Transport(target, u.h2.roots, timeout)
	u.h2.transports[key] = t
	return t, true
}

// pruneH2 retires the HTTP/2 transports whose keys are not in used.
func (u *Upstreams) pruneH2(used map[string]bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for k, t := range u.h2.transports {
		if !used[k] {
			t.close()
			delete(u.h2.transports, k)
		}
	}
}

// Bounds of an HTTP/2 upstream (h2c:// or h2://).
const (
	// h2MaxStreams bounds the requests in flight to one upstream; more
	// wait for a slot, within upstream_timeout. It bounds connections too:
	// a request holds at most one.
	h2MaxStreams = 1024
	// h2MaxConns bounds the connections to one upstream. Requests share
	// a connection up to the app's SETTINGS_MAX_CONCURRENT_STREAMS;
	// another is opened only when every one is full.
	h2MaxConns = 16
	// h2MaxHeaderBytes bounds a response head, as for HTTP/1.1 upstreams.
	h2MaxHeaderBytes = 1 << 20
	// h2StreamWindow bounds what the app may send on a stream ahead of the
	// client reading it, i.e. what aopguard holds for a slow client
	// (net/http's client default is 4 MiB): 256 MiB at most for
	// h2MaxStreams. The connection window stays large, so one slow
	// client's stream never stalls the others on its connection.
	h2StreamWindow = 256 << 10
	h2DialTimeout  = 5 * time.Second
	h2TLSTimeout   = 10 * time.Second
	h2IdleFor      = 90 * time.Second
)

// h2Transport speaks HTTP/2 to one upstream through net/http's own HTTP/2
// client: cleartext with prior knowledge for h2c:// (the app listens for
// HTTP/2 only, as gRPC servers do), over TLS with ALPN "h2" for h2://. It
// is what gRPC needs: streams in both directions, trailers, and the
// client's cancellation passed on as RST_STREAM.
//
// upstream_timeout bounds, separately, everything before the request's
// head is on a connection (waiting for a stream slot or a connection, the
// dial, the TLS handshake) and the wait for the app's response head once
// the request body is sent (http.Transport's ResponseHeaderTimeout); the
// client gets 504 when either runs out. The upload itself is not bounded
// by it: a gRPC client-streaming call may send for as long as it likes.
type h2Transport struct {
	tr      *http.Transport
	timeout time.Duration
	streams chan struct{} // a token per request in flight
}

// newH2Transport returns the transport for an h2c:// or h2:// upstream
// target. roots verifies an h2:// app's certificate (nil: the system's
// roots, as for https:// upstreams); timeout is upstream_timeout.
func newH2Transport(target *url.URL, roots *x509.CertPool, timeout time.Duration) *h2Transport {
	port := target.Port()
	if port == "" {
		port = map[string]string{"h2c": "80", "h2": "443"}[target.Scheme]
	}
	addr := net.JoinHostPort(target.Hostname(), port)
	d := &net.Dialer{Timeout: h2DialTimeout, KeepAlive: 30 * time.Second}
	var protos http.Protocols
	tr := &http.Transport{
		Proxy:                  nil, // never an environment proxy
		Protocols:              &protos,
		DisableCompression:     true, // Accept-Encoding goes as the client sent it
		ResponseHeaderTimeout:  timeout,
		MaxResponseHeaderBytes: h2MaxHeaderBytes,
		MaxConnsPerHost:        h2MaxConns,
		MaxIdleConns:           h2MaxConns,
		MaxIdleConnsPerHost:    h2MaxConns,
		IdleConnTimeout:        h2IdleFor,
		HTTP2: &http.HTTP2Config{
			MaxReceiveBufferPerStream: h2StreamWindow,
			// An app that stops reading its connection altogether
			// (TCP backpressure), not one stream, loses the connection.
			WriteByteTimeout: timeout,
		},
	}
	if target.Scheme == "h2c" {
		protos.SetUnencryptedHTTP2(true)
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}
	} else {
		protos.SetHTTP2(true)
		cfg := &tls.Config{ServerName: target.Hostname(), RootCAs: roots, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12}
		tr.DialTLSContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialH2TLS(ctx, d, addr, cfg)
		}
	}
	return &h2Transport{tr: tr, timeout: timeout, streams: make(chan struct{}, h2MaxStreams)}
}

// dialH2TLS connects to an h2:// upstream and insists on HTTP/2: an app
// that answers ALPN with anything else is refused rather than spoken to in
// HTTP/1.1, which it was not configured for.
func dialH2TLS(ctx context.Context, d *net.Dialer, addr string, cfg *tls.Config) (net.Conn, error) {
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := tls.Client(raw, cfg)
	hctx, cancel := context.WithTimeout(ctx, h2TLSTimeout)
	defer cancel()
	if err := c.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, err
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		c.Close()
		return nil, fmt.Errorf("upstream %s did not negotiate HTTP/2 (ALPN %q); use https:// for an HTTP/1.1 app", addr, p)
	}
	return c, nil
}

// errH2Timeout ends a request whose response head did not come within
// upstream_timeout; a net.Error with Timeout, so it is answered 504.
var errH2Timeout error = h2TimeoutError{}

type h2TimeoutError struct{}

func (h2TimeoutError) Error() string {
	return "upstream did not send its response head within upstream_timeout"
}
func (h2TimeoutError) Timeout() bool   { return true }
func (h2TimeoutError) Temporary() bool { return true }

// RoundTrip sends req on a pooled HTTP/2 connection. The request's context
// is the client's (cancelled when an HTTP/2 client resets its stream), so
// the app sees the stream reset when the client goes away.
func (t *h2Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	timer := time.AfterFunc(t.timeout, func() { cancel(errH2Timeout) })
	select {
	case t.streams <- struct{}{}:
	default:
		select {
		case t.streams <- struct{}{}:
		case <-ctx.Done():
			timer.Stop()
			cancel(nil)
			if req.Body != nil {
				req.Body.Close() // as a RoundTripper must, on every error
			}
			return nil, t.failure(ctx, req, ctx.Err())
		}
	}
	// Once the request's head is written, the body may take as long as
	// the client takes to send it; ResponseHeaderTimeout starts after it.
	// (WithClientTrace keeps ReverseProxy's own trace, for 1xx responses.)
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteHeaders: func() { timer.Stop() }})
	res, err := t.tr.RoundTrip(req.WithContext(ctx))
	timer.Stop()
	if err == nil && ctx.Err() != nil {
		// The timer fired (or the client left) as the head was being
		// written: the stream is being reset, so the body cannot be read.
		res.Body.Close()
		err = context.Cause(ctx)
	}
	if err != nil {
		timer.Stop()
		<-t.streams
		cancel(nil)
		return nil, t.failure(ctx, req, err)
	}
	res.Body = &h2Body{ReadCloser: res.Body, t: t, cancel: cancel}
	return res, nil
}

// failure returns the error to report for a request that got no response:
// the client's cancellation as it is, the timer's as errH2Timeout.
func (t *h2Transport) failure(ctx context.Context, req *http.Request, err error) error {
	if req.Context().Err() == nil && errors.Is(context.Cause(ctx), errH2Timeout) {
		return errH2Timeout
	}
	return err
}

// CloseIdleConnections closes the connections no request is using.
func (t *h2Transport) CloseIdleConnections() { t.tr.CloseIdleConnections() }

// close retires the transport (its upstream left the configuration): idle
// connections are closed now; those carrying streams are closed by the
// idle timeout once their streams end.
func (t *h2Transport) close() { t.tr.CloseIdleConnections() }

// h2Body gives the request's stream slot back and releases its context
// when ReverseProxy closes the response body (it always does).
type h2Body struct {
	io.ReadCloser
	t      *h2Transport
	cancel context.CancelCauseFunc
	closed atomic.Bool
}

func (b *h2Body) Close() error {
	err := b.ReadCloser.Close()
	if b.closed.CompareAndSwap(false, true) {
		<-b.t.streams
		b.cancel(nil)
	}
	return err
}

// h2Target is the URL ReverseProxy sends an h2c:// or h2:// upstream's
// requests to: the scheme net/http knows (http, https), same host and path.
func h2Target(target *url.URL) *url.URL {
	t := *target
	t.Scheme = map[string]string{"h2c": "http", "h2": "https"}[target.Scheme]
	return &t
}
