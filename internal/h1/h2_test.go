package h1

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"
)

// stallConn is the connection under an h2conn in these tests: each Write
// is recorded, then waits for a token on release (or the write deadline,
// or Close), so a test decides when the socket "drains".
type stallConn struct {
	net.Conn // nil: only the methods below are called
	release  chan struct{}
	fail     error // returned by every Write once set before it

	mu       sync.Mutex
	writes   [][]byte
	closed   chan struct{}
	deadline chan struct{} // closed when a write deadline passes
	dlOnce   sync.Once
}

func newStallConn() *stallConn {
	return &stallConn{release: make(chan struct{}), closed: make(chan struct{}), deadline: make(chan struct{})}
}

func (c *stallConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, bytes.Clone(p))
	fail := c.fail
	c.mu.Unlock()
	if fail != nil {
		return 0, fail
	}
	select {
	case <-c.release:
		return len(p), nil
	case <-c.deadline:
		return 0, errors.New("write deadline exceeded")
	case <-c.closed:
		return 0, net.ErrClosed
	}
}

func (c *stallConn) written() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var s []string
	for _, w := range c.writes {
		s = append(s, string(w))
	}
	return s
}

func (c *stallConn) Close() error {
	select {
	case <-c.closed:
	default:
		close(c.closed)
	}
	return nil
}

func (c *stallConn) SetWriteDeadline(t time.Time) error {
	time.AfterFunc(time.Until(t), func() { c.dlOnce.Do(func() { close(c.deadline) }) })
	return nil
}
func (c *stallConn) SetReadDeadline(time.Time) error      { return nil }
func (c *stallConn) ConnectionState() tls.ConnectionState { return tls.ConnectionState{} }
func (c *stallConn) NetConn() net.Conn                    { return nil }

func newTestH2conn(c *stallConn) *h2conn {
	hc := &h2conn{tlsConn: c}
	hc.cond.L = &hc.mu
	return hc
}

// TestH2connCoalesces: what the HTTP/2 server writes while the socket is
// busy goes out in one write, in order, and nothing is lost; once all is
// sent the connection holds no buffer.
func TestH2connCoalesces(t *testing.T) {
	sc := newStallConn()
	hc := newTestH2conn(sc)
	if _, err := hc.Write([]byte("HEADERS1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first write to reach the socket", func() bool { return len(sc.written()) == 1 })
	for _, f := range []string{"DATA1", "HEADERS2", "DATA2"} {
		if n, err := hc.Write([]byte(f)); err != nil || n != len(f) {
			t.Fatalf("Write(%q) = %d, %v", f, n, err)
		}
	}
	sc.release <- struct{}{}
	waitFor(t, "the second write", func() bool { return len(sc.written()) == 2 })
	sc.release <- struct{}{}
	if got, want := sc.written(), []string{"HEADERS1", "DATA1HEADERS2DATA2"}; !equal(got, want) {
		t.Errorf("socket writes %q, want %q", got, want)
	}
	waitFor(t, "the flush goroutine to end", func() bool {
		hc.mu.Lock()
		defer hc.mu.Unlock()
		return !hc.writing
	})
	if hc.pending != nil || hc.spare != nil {
		t.Errorf("an idle connection holds buffers of %d and %d bytes", cap(hc.pending), cap(hc.spare))
	}
}

// TestH2connBounded: while the socket does not drain, Write waits once
// h2MaxPending bytes are queued, and carries on when it drains.
func TestH2connBounded(t *testing.T) {
	sc := newStallConn()
	hc := newTestH2conn(sc)
	hc.Write([]byte("x"))
	waitFor(t, "the first write to reach the socket", func() bool { return len(sc.written()) == 1 })
	hc.Write(make([]byte, h2MaxPending))
	done := make(chan error, 1)
	go func() {
		_, err := hc.Write([]byte("over"))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Write past h2MaxPending returned (%v) while the socket was stalled", err)
	case <-time.After(50 * time.Millisecond):
	}
	sc.release <- struct{}{} // "x" sent; the big batch is taken, "over" may queue
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	close(sc.release)
	waitFor(t, "everything sent", func() bool {
		hc.mu.Lock()
		defer hc.mu.Unlock()
		return !hc.writing
	})
	var n int
	for _, w := range sc.written() {
		n += len(w)
	}
	if want := 1 + h2MaxPending + len("over"); n != want {
		t.Errorf("socket got %d bytes, want %d", n, want)
	}
}

// TestH2connWriteError: a failed socket write closes the connection and
// the next Write returns the error.
func TestH2connWriteError(t *testing.T) {
	sc := newStallConn()
	sc.fail = errors.New("connection reset by peer")
	hc := newTestH2conn(sc)
	if _, err := hc.Write([]byte("HEADERS")); err != nil {
		t.Fatalf("first Write: %v (the error belongs to a later one)", err)
	}
	select {
	case <-sc.closed:
	case <-time.After(guard):
		t.Fatal("the connection was not closed after a failed write")
	}
	if _, err := hc.Write([]byte("DATA")); err == nil || err.Error() != sc.fail.Error() {
		t.Errorf("Write after the failure = %v, want %v", err, sc.fail)
	}
}

// TestH2connCloseSendsPending: Close sends what is pending (a GOAWAY)
// before closing; to a client that does not read, it gives up at the
// write deadline it sets, and closes.
func TestH2connCloseSendsPending(t *testing.T) {
	t.Run("drains", func(t *testing.T) {
		sc := newStallConn()
		hc := newTestH2conn(sc)
		hc.Write([]byte("DATA"))
		waitFor(t, "the first write to reach the socket", func() bool { return len(sc.written()) == 1 })
		hc.Write([]byte("GOAWAY"))
		hc.Close()
		if _, err := hc.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Write after Close = %v, want net.ErrClosed", err)
		}
		select {
		case <-sc.closed:
			t.Fatal("closed before the pending GOAWAY was sent")
		default:
		}
		close(sc.release)
		select {
		case <-sc.closed:
		case <-time.After(guard):
			t.Fatal("not closed once everything was sent")
		}
		if got, want := sc.written(), []string{"DATA", "GOAWAY"}; !equal(got, want) {
			t.Errorf("socket writes %q, want %q", got, want)
		}
	})
	t.Run("client not reading", func(t *testing.T) {
		sc := newStallConn()
		hc := newTestH2conn(sc)
		hc.Write([]byte("DATA"))
		waitFor(t, "the first write to reach the socket", func() bool { return len(sc.written()) == 1 })
		hc.Close() // sets a write deadline, which fails the stalled write
		select {
		case <-sc.closed:
		case <-time.After(guard):
			t.Fatal("not closed after the write deadline")
		}
	})
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// h2Client returns a Server on a TLS listener on 127.0.0.1 and an HTTP/2
// client for it.
func h2Client(t testing.TB, h http.Handler) (*Server, string, *http.Client) {
	t.Helper()
	ln, lender := lentTLSListener(t)
	srv := serveOn(t, h, ln)
	tr := lender.Client().Transport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = true
	t.Cleanup(tr.CloseIdleConnections)
	return srv, "https://" + ln.Addr().String(), &http.Client{Transport: tr, Timeout: guard}
}

// TestH2ShutdownAndClose: Shutdown lets an HTTP/2 request in flight
// finish, whole, and returns once its connection is closed; Close ends
// one in flight at once.
func TestH2ShutdownAndClose(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB: several flushes
	for _, how := range []string{"Shutdown", "Close"} {
		t.Run(how, func(t *testing.T) {
			started, finish := make(chan struct{}), make(chan struct{})
			srv, url, client := h2Client(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				close(started)
				select {
				case <-finish:
				case <-r.Context().Done():
					return
				}
				w.Write(body)
			}))
			type result struct {
				body []byte
				err  error
			}
			got := make(chan result, 1)
			go func() {
				res, err := client.Get(url + "/")
				if err != nil {
					got <- result{err: err}
					return
				}
				defer res.Body.Close()
				b, err := io.ReadAll(res.Body)
				if err == nil && res.ProtoMajor != 2 {
					err = errors.New("served " + res.Proto)
				}
				got <- result{b, err}
			}()
			select {
			case <-started:
			case <-time.After(guard):
				t.Fatal("the request did not reach the handler")
			}
			if how == "Close" {
				srv.Close()
				if r := <-got; r.err == nil {
					t.Fatalf("request in flight got %d bytes after Close, want an error", len(r.body))
				}
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), guard)
			defer cancel()
			shut := make(chan error, 1)
			go func() { shut <- srv.Shutdown(ctx) }()
			select {
			case err := <-shut:
				t.Fatalf("Shutdown returned (%v) with a request in flight", err)
			case <-time.After(50 * time.Millisecond):
			}
			close(finish)
			if r := <-got; r.err != nil || !bytes.Equal(r.body, body) {
				t.Fatalf("request in flight: %d bytes, %v; want the whole body", len(r.body), r.err)
			}
			if err := <-shut; err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			if srv.h2count() != 0 {
				t.Errorf("%d HTTP/2 connections left after Shutdown", srv.h2count())
			}
		})
	}
}

// BenchmarkH2Server: the HTTP/2 engine alone, 32 concurrent streams on
// one TLS connection, each answered 1 KiB by the handler. ns/op and
// allocs/op include the client's work (net/http's, in this process).
func BenchmarkH2Server(b *testing.B) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 64)
	_, url, client := h2Client(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = []string{"application/octet-stream"}
		w.Write(body)
	}))
	get := func() error {
		res, err := client.Get(url + "/")
		if err != nil {
			return err
		}
		defer res.Body.Close()
		n, err := io.Copy(io.Discard, res.Body)
		if err == nil && (res.ProtoMajor != 2 || n != int64(len(body))) {
			err = errors.New("not a whole HTTP/2 answer: " + res.Proto)
		}
		return err
	}
	if err := get(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0)))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := get(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
