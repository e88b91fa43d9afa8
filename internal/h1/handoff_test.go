package h1

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"weak"
)

// handedOff reports whether a connection's request loop runs on a
// goroutine the loop itself started (the idle hand-off).
func handedOffLoops() bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Contains(string(buf), "created by github.com/aopguard/aopguard/internal/h1.(*h1conn).serve")
}

// plainGet is a bodiless request these tests send.
const plainGet = "GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"

// exchangeOK sends req on c and reads the answer from br, which must be a
// 200 with body "ok".
func exchangeOK(c net.Conn, br *bufio.Reader, req string) error {
	if _, err := io.WriteString(c, req); err != nil {
		return err
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	if res.StatusCode != 200 || string(b) != "ok" {
		return fmt.Errorf("answer %d %q, want 200 \"ok\"", res.StatusCode, b)
	}
	return nil
}

// TestIdleHandoff: a keep-alive connection idle past idleHandoff continues
// on a new goroutine (whose stack is small again) and serves its next
// request there; the idle timeout still ends it; Shutdown still closes it.
func TestIdleHandoff(t *testing.T) {
	for _, end := range []string{"next request", "idle timeout", "shutdown"} {
		t.Run(end, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			idle := guard
			if end == "idle timeout" {
				idle = 5 * idleHandoff
			}
			var remotes []string
			srv := NewServer(Options{ReadHeaderTimeout: guard, IdleTimeout: idle,
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					remotes = append(remotes, r.RemoteAddr)
					io.WriteString(w, "ok")
				})})
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ln) }()
			defer func() {
				srv.Close()
				<-done
			}()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(guard))
			br := bufio.NewReader(c)
			get := func() error { return exchangeOK(c, br, plainGet) }
			if err := get(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the idle connection's hand-off", handedOffLoops)
			switch end {
			case "next request":
				if err := get(); err != nil {
					t.Fatalf("after the hand-off: %v", err)
				}
				if len(remotes) != 2 || remotes[0] != remotes[1] {
					t.Fatalf("requests came from %v, want two on one connection", remotes)
				}
			case "idle timeout":
				if _, err := br.ReadByte(); err != io.EOF {
					t.Fatalf("an idle connection past its timeout: read %v, want EOF", err)
				}
			case "shutdown":
				ctx, cancel := context.WithTimeout(context.Background(), guard)
				defer cancel()
				if err := srv.Shutdown(ctx); err != nil {
					t.Fatalf("Shutdown: %v", err)
				}
				if _, err := br.ReadByte(); err != io.EOF {
					t.Fatalf("an idle connection after Shutdown: read %v, want EOF", err)
				}
			}
		})
	}
}

// TestIdleHoldsNoRequest: a keep-alive connection waiting for its next
// request holds nothing of the last one (its header map, URL, body
// reader), which would otherwise be kept per idle connection; the
// connection still serves the next request.
func TestIdleHoldsNoRequest(t *testing.T) {
	for _, method := range []string{"GET", "POST"} {
		t.Run(method, func(t *testing.T) {
			seen := make(chan weak.Pointer[http.Request], 2)
			addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen <- weak.Make(r)
				io.WriteString(w, "ok")
			}))
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			req := plainGet
			if method == "POST" {
				req = "POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 2\r\n\r\nhi"
			}
			get := func() {
				t.Helper()
				c.SetDeadline(time.Now().Add(guard))
				if err := exchangeOK(c, br, req); err != nil {
					t.Fatal(err)
				}
			}
			get()
			wp := <-seen
			waitFor(t, "the idle connection to let go of its last request", func() bool {
				runtime.GC()
				return wp.Value() == nil
			})
			get()
			<-seen
		})
	}
}

// waitConn is a connection that offers the shallow wait (as
// tlsconfig.Conn does), counting its calls and ending them with err.
type waitConn struct {
	net.Conn
	waits *atomic.Int32
	err   error
}

func (c waitConn) WaitReadable() error { c.waits.Add(1); return c.err }

type waitListener struct {
	net.Listener
	waits atomic.Int32
	err   error
}

func (l *waitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return waitConn{c, &l.waits, l.err}, nil
}

// TestResumeWaits: the goroutine a connection is handed off to first waits
// in the connection's WaitReadable where it has one; when that wait ends
// in an error (the idle timeout, a close) the connection ends, else the
// next request is served.
func TestResumeWaits(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"readable", nil},
		{"wait ended", os.ErrDeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ln := &waitListener{Listener: inner, err: tc.err}
			cancelled := make(chan bool, 1)
			serveOn(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/wait" {
					select {
					case <-r.Context().Done():
						cancelled <- true
					case <-time.After(guard):
						cancelled <- false
					}
					return
				}
				io.WriteString(w, "ok")
			}), ln)
			c, err := net.Dial("tcp", inner.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(guard))
			br := bufio.NewReader(c)
			get := func() {
				t.Helper()
				if err := exchangeOK(c, br, plainGet); err != nil {
					t.Fatal(err)
				}
			}
			get()
			waitFor(t, "the handed-off wait", func() bool { return ln.waits.Load() > 0 })
			if tc.err != nil {
				if _, err := br.ReadByte(); err != io.EOF {
					t.Fatalf("after a wait that ended in %v: read %v, want EOF", tc.err, err)
				}
				return
			}
			get()
			// The client watch (its timer let go at the hand-off) still
			// notices a client that goes away.
			waitFor(t, "the second hand-off", func() bool { return ln.waits.Load() > 1 })
			if _, err := io.WriteString(c, "GET /wait HTTP/1.1\r\nHost: a.example\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			c.Close()
			if !<-cancelled {
				t.Fatal("a request after the hand-off was not cancelled when its client went away")
			}
		})
	}
}
