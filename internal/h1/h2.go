package h1

import (
	"context"
	"net"
	"runtime"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// HTTP/2 is served by net/http's server (through golang.org/x/net/http2's
// ServeConn, so that it writes to a connection of ours: h2conn).

// h2CloseFlush bounds how long closing an HTTP/2 connection waits for its
// last frames (a GOAWAY) to be written to a client that does not read.
const h2CloseFlush = time.Second

// h2MaxPending bounds the bytes an HTTP/2 connection holds written but
// not yet sent; a frame written past it waits for the socket.
const h2MaxPending = 64 << 10

// h2bufs holds the buffers HTTP/2 connections queue their writes in
// between flushes: a connection holds none while it has nothing to send.
var h2bufs = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// h2BufKeep is the largest buffer put back in h2bufs.
const h2BufKeep = 2 * h2MaxPending

func putH2buf(b []byte) {
	if b != nil && cap(b) <= h2BufKeep {
		b = b[:0]
		h2bufs.Put(&b)
	}
}

// serveH2 serves HTTP/2 on c until it closes, and closes it.
func (s *Server) serveH2(c tlsConn) {
	hc := &h2conn{tlsConn: c}
	hc.cond.L = &hc.mu
	s.mu.Lock()
	if s.shutting.Load() {
		s.mu.Unlock()
		c.Close()
		return
	}
	s.h2conns[hc] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.h2conns, hc)
		s.mu.Unlock()
		hc.Close()
	}()
	// Hooks and Refused see the connection Serve accepted.
	ctx := context.WithValue(context.Background(), connContextKey{}, net.Conn(c))
	if s.opts.ConnContext != nil {
		ctx = s.opts.ConnContext(ctx, c)
	}
	// No BaseConfig: with one, x/net builds an http.Server per connection;
	// without, it serves with h2base, configured once in NewServer.
	//lint:ignore SA1019 see Server.h2base
	s.h2.ServeConn(hc, &http2.ServeConnOpts{Context: ctx, Handler: h2Handler{s}})
}

// h2count returns how many HTTP/2 connections are being served.
func (s *Server) h2count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.h2conns)
}

// h2conn is the connection net/http's HTTP/2 server writes to. That
// server flushes its frame buffer whenever it has no frame ready, which
// under load means one flush, one TLS record and one write system call
// per frame: a response's HEADERS, then its DATA. h2conn takes what a
// flush writes and returns at once; a goroutine of its own writes what
// has accumulated once the goroutines ready to run have run (so the
// frames of every stream that became ready meanwhile go out together in
// one record and one system call). At most h2MaxPending bytes wait; a
// write error is returned by the next Write and closes the connection.
type h2conn struct {
	tlsConn

	mu      sync.Mutex
	cond    sync.Cond // signalled when pending shrinks or writing ends
	pending []byte    // written by the HTTP/2 server, not yet sent (from h2bufs)
	spare   []byte    // the batch being sent's buffer, once sent (from h2bufs)
	writing bool      // the flush goroutine is running
	werr    error     // the first write error; net.ErrClosed after closeNow
	closed  bool      // Close called: Write fails
	closing bool      // the flush goroutine closes the connection when done
}

// Write queues p to be sent and returns; it waits only while
// h2MaxPending bytes are queued.
func (c *h2conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for c.werr == nil && !c.closed && len(c.pending) >= h2MaxPending {
		c.cond.Wait()
	}
	if err := c.werr; err != nil || c.closed {
		c.mu.Unlock()
		if err == nil {
			err = net.ErrClosed
		}
		return 0, err
	}
	if c.pending == nil {
		c.pending = *h2bufs.Get().(*[]byte)
	}
	c.pending = append(c.pending, p...)
	if !c.writing {
		c.writing = true
		go c.flush()
	}
	c.mu.Unlock()
	return len(p), nil
}

// flush sends what is pending until nothing is.
func (c *h2conn) flush() {
	// Let the goroutines that are ready (the server's loop, handlers
	// finishing their responses) queue their frames first.
	runtime.Gosched()
	c.mu.Lock()
	for c.werr == nil && len(c.pending) > 0 {
		b := c.pending
		c.pending, c.spare = c.spare, nil
		c.cond.Broadcast()
		c.mu.Unlock()
		_, err := c.tlsConn.Write(b)
		c.mu.Lock()
		c.spare = b[:0]
		if err != nil && c.werr == nil {
			c.werr = err
			// The server learns of it at its next write; closing ends
			// its reads now.
			c.closing = true
		}
	}
	// Nothing left to send (or no way to send it): keep no buffer.
	putH2buf(c.spare)
	putH2buf(c.pending)
	c.spare, c.pending = nil, nil
	c.writing = false
	c.cond.Broadcast()
	closing := c.closing
	c.mu.Unlock()
	if closing {
		c.tlsConn.Close()
	}
}

// Close closes the connection once what is pending has been sent (at
// most h2CloseFlush later), and at once stops Read.
func (c *h2conn) Close() error {
	c.mu.Lock()
	c.closed = true
	if c.writing {
		c.closing = true
		c.cond.Broadcast()
		c.mu.Unlock()
		c.tlsConn.SetWriteDeadline(time.Now().Add(h2CloseFlush))
		c.tlsConn.SetReadDeadline(time.Now())
		return nil
	}
	c.mu.Unlock()
	return c.tlsConn.Close()
}

// closeNow closes the connection without sending what is pending.
func (c *h2conn) closeNow() {
	c.mu.Lock()
	c.closed = true
	if c.werr == nil {
		c.werr = net.ErrClosed
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	c.tlsConn.Close()
}
