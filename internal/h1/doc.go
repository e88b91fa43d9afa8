// Package h1 is aopguard's HTTP engine: an HTTP/1.1 server (HTTP/2 is
// served by net/http's HTTP/2 server) and an HTTP/1.1 client transport for the
// upstream. It knows nothing of policies or certificates: a Server serves
// the connections a listener accepts with an http.Handler, a Transport is
// an http.RoundTripper. Whatever the handler needs to know about a
// connection it finds through Options.ConnContext, as with net/http.
//
// Both sides carry every byte an attacker sends and every byte the app
// answers, so both hold messages to the rules nginx applies, or stricter
// ones, and refuse what could be framed differently by the next parser.
// Deliberate differences from net/http:
//
// Server, HTTP/1.1:
//   - One goroutine per connection and no buffer held between requests.
//     A connection idle for 100 ms moves to a new goroutine, so that it
//     waits on a small stack rather than the one serving grew.
//     Requests share their connection's context: it is cancelled when the
//     client disconnects while a request waits on the handler, or when
//     the connection ends, not when ServeHTTP returns (net/http makes a
//     context per request). The client is watched only once a request has
//     been read whole and has had no answer for WatchDelay, so a fast
//     request costs no goroutine; a byte the watch reads (a pipelined
//     request) is kept. The Transport registers its interrupt with that
//     context without allocating.
//   - Refused with 400 and the connection closed (net/http accepts or
//     normalises these): Content-Length together with Transfer-Encoding
//     (RFC 9112 6.3; net/http drops the Content-Length); Transfer-Encoding
//     on an HTTP/1.0 request (net/http ignores it); more than one
//     Content-Length field, even with equal values, or of Transfer-Encoding;
//     a header line folded
//     onto the previous one (obs-fold; net/http joins them); a method that
//     is not upper-case letters, '-' or '_' (nginx's rule); CONNECT; the
//     asterisk-form outside OPTIONS; an absolute-form target whose scheme
//     is not http or https, that carries userinfo or has no host.
//   - Refused with 501: a transfer coding other than "chunked" (as net/http).
//   - "OPTIONS *" is answered 200 by the server itself and never reaches
//     the handler (as net/http).
//   - A refused request never reaches the handler; Options.Refused is told
//     of it (status, reason, what was parsed), so it can be logged.
//   - Response header fields with names that are not tokens are dropped
//     when writing; values have CR and LF replaced by spaces.
//   - An unread request body of at most 256 KiB is drained after the
//     response to keep the connection; a larger one closes it.
//
// Server, HTTP/2 (net/http's server through golang.org/x/net/http2's
// ServeConn, configured):
//   - Frames are written to the connection behind the server's back: what
//     a flush writes is queued (at most 64 KiB; beyond, the flush waits)
//     and sent by a goroutine of the connection's once the goroutines
//     ready to run have run, so the frames of every stream that became
//     ready meanwhile leave in one TLS record batch and one system call
//     (net/http flushes, and writes, each frame on its own under load: a
//     response's HEADERS, then its DATA). A failed write is reported at
//     the next one and closes the connection; closing sends what is queued
//     first, for at most a second.
//   - A request whose header list exceeds Options.MaxHeaderBytes is
//     answered 431 on its stream and the connection carries on. net/http
//     sets the HPACK decoder's string limit to the header list limit, so a
//     single long field tears the connection down (GOAWAY); here the
//     decoder accepts fields up to H2HeaderCeiling and the limit is applied
//     per request. A field longer than the ceiling still ends the
//     connection: the decoder must hold a field to keep its table in step.
//   - CONNECT (extended CONNECT included) is answered 400 on its stream.
//   - Options.Refused is told of both refusals, as for HTTP/1.1.
//
// Transport:
//   - HTTP/1.1 only, one request per connection at a time, in the caller's
//     goroutine (no read and write goroutines per connection as in
//     http.Transport); never through an environment proxy; no
//     Accept-Encoding added and no decompression.
//   - A response head is refused (the request fails, the connection is
//     closed, never reused) when a header name is not a token (such as
//     "Content-Length :", which RFC 9112 5.1 forbids and net/http
//     silently accepts), when it has Content-Length with Transfer-Encoding,
//     Transfer-Encoding in an HTTP/1.0 response, more than one
//     Content-Length field, or a folded line; and so is a trailer with an
//     invalid name. nginx 1.22 answers 502 to the invalid names and the
//     folded line, and passes the framing cases on.
//   - A request whose context is done is never sent and never makes the
//     transport dial.
//   - A request that failed on a reused connection before any byte of an
//     answer arrived is retried once on a new connection, when it had no
//     body and could not have been acted upon or is idempotent.
package h1
