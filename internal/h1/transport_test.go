package h1

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// appServer is an upstream app that counts its connections and can close
// the idle ones behind the proxy's back, as apps with a short keep-alive
// timeout do.
type appServer struct {
	srv   *httptest.Server
	conns atomic.Int32 // accepted so far
	reqs  atomic.Int32 // requests served so far

	mu   sync.Mutex
	idle map[net.Conn]bool
}

func newAppServer(t *testing.T, h http.HandlerFunc) *appServer {
	a := &appServer{idle: map[net.Conn]bool{}}
	a.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.reqs.Add(1)
		h(w, r)
	}))
	a.srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		a.mu.Lock()
		defer a.mu.Unlock()
		switch s {
		case http.StateNew:
			a.conns.Add(1)
		case http.StateIdle:
			a.idle[c] = true
		default:
			delete(a.idle, c)
		}
	}
	a.srv.Start()
	t.Cleanup(a.srv.Close)
	return a
}

// closeIdle closes every idle connection from the app's side and returns
// how many it closed.
func (a *appServer) closeIdle() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := len(a.idle)
	for c := range a.idle {
		c.Close()
		delete(a.idle, c)
	}
	return n
}

func (a *appServer) transport() *Transport {
	return NewTransport(TransportOptions{Network: "tcp", Address: strings.TrimPrefix(a.srv.URL, "http://"), ResponseHeaderTimeout: guard})
}

func roundTrip(t *testing.T, tr *Transport, method, path, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://app.example.com"+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(b)
}

func echoApp(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	io.WriteString(w, r.Method+" "+string(b))
}

func TestTransportReusesConnections(t *testing.T) {
	app := newAppServer(t, echoApp)
	tr := app.transport()
	for range 20 {
		if code, body := roundTrip(t, tr, "GET", "/", ""); code != 200 || body != "GET " {
			t.Fatalf("got %d %q", code, body)
		}
	}
	if n := app.conns.Load(); n != 1 {
		t.Errorf("20 sequential requests used %d connections, want 1", n)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 10 {
				roundTrip(t, tr, "POST", "/", "x")
			}
		})
	}
	wg.Wait()
	if n := app.conns.Load(); n > 9 {
		t.Errorf("8 concurrent clients used %d connections, want at most 9", n)
	}
	tr.CloseIdleConnections()
	waitFor(t, "the app to see its connections closed", func() bool { return app.closeIdle() == 0 })
}

// TestTransportAppClosedIdle: the app closed a pooled connection while it
// was idle. The next request, with or without a body, still gets through,
// and reaches the app exactly once.
func TestTransportAppClosedIdle(t *testing.T) {
	app := newAppServer(t, echoApp)
	tr := app.transport()
	tests := []struct{ method, body string }{{"GET", ""}, {"POST", "payload"}, {"GET", ""}}
	for _, tt := range tests {
		roundTrip(t, tr, "GET", "/", "") // leaves one idle connection in the pool
		waitFor(t, "the app to see its connection idle", func() bool { return app.closeIdle() == 1 })
		before := app.reqs.Load()
		if code, body := roundTrip(t, tr, tt.method, "/", tt.body); code != 200 || body != tt.method+" "+tt.body {
			t.Errorf("%s after the app closed the idle connection: %d %q", tt.method, code, body)
		}
		if n := app.reqs.Load() - before; n != 1 {
			t.Errorf("%s reached the app %d times, want once", tt.method, n)
		}
	}
}

func TestTransportRefusesHugeHead(t *testing.T) {
	app := newAppServer(t, func(w http.ResponseWriter, r *http.Request) {
		for i := range 20 {
			w.Header().Set("X-Big-"+string(rune('a'+i)), strings.Repeat("b", 64<<10))
		}
	})
	tr := app.transport()
	req, _ := http.NewRequest("GET", "http://app.example.com/", nil)
	if res, err := tr.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "exceeds") {
		if res != nil {
			res.Body.Close()
		}
		t.Errorf("1.3 MiB response head: err %v, want one that says it exceeds the bound", err)
	}
}

// TestTransportHeaderTimeout: an app that does not answer within the
// timeout gets an error that is a net.Error timeout (answered 504), and a
// cancelled HTTP/2 request stops waiting at once.
func TestTransportHeaderTimeout(t *testing.T) {
	release := make(chan struct{})
	app := newAppServer(t, func(w http.ResponseWriter, r *http.Request) { <-release })
	defer close(release)
	tr := NewTransport(TransportOptions{Network: "tcp", Address: strings.TrimPrefix(app.srv.URL, "http://"), ResponseHeaderTimeout: 50 * time.Millisecond})
	req, _ := http.NewRequest("GET", "http://app.example.com/", nil)
	_, err := tr.RoundTrip(req)
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Errorf("err %v, want a net.Error timeout", err)
	}

	tr = app.transport()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ = http.NewRequestWithContext(ctx, "GET", "http://app.example.com/", nil)
	errc := make(chan error, 1)
	go func() { _, err := tr.RoundTrip(req); errc <- err }()
	waitFor(t, "the request to reach the app", func() bool { return app.reqs.Load() == 2 })
	cancel()
	select {
	case err := <-errc:
		if err != context.Canceled {
			t.Errorf("err %v, want context.Canceled", err)
		}
	case <-time.After(guard):
		t.Fatal("RoundTrip still waiting after its context was cancelled")
	}
}

// TestTransportNoRepeat: a POST without a body whose connection dies
// before an answer is not sent again (the app may have acted on it); a
// GET is.
func TestTransportNoRepeat(t *testing.T) {
	var posts, gets atomic.Int32
	app := newAppServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/die" {
			if r.Method == "POST" && posts.Add(1) > 0 || r.Method == "GET" && gets.Add(1) == 1 {
				if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
					c.Close() // dies after reading the request, before answering
				}
				return
			}
		}
		io.WriteString(w, "ok")
	})
	tr := app.transport()
	roundTrip(t, tr, "GET", "/", "") // a pooled connection to fail on
	req, _ := http.NewRequest("POST", "http://app.example.com/die", nil)
	if res, err := tr.RoundTrip(req); err == nil {
		res.Body.Close()
		t.Error("POST on a connection that died got an answer")
	}
	if n := posts.Load(); n != 1 {
		t.Errorf("POST reached the app %d times, want once", n)
	}
	roundTrip(t, tr, "GET", "/", "")
	if code, body := roundTrip(t, tr, "GET", "/die", ""); code != 200 || body != "ok" || gets.Load() != 2 {
		t.Errorf("GET: %d %q after %d tries; want ok on the second", code, body, gets.Load())
	}
}

// TestTransportStrayBytes: bytes an app sends after a response (here: a
// body for a HEAD) are never read as the next request's response.
func TestTransportStrayBytes(t *testing.T) {
	app := newAppServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "HEAD" {
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 48\r\n\r\n")
			brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged")
			brw.Flush()
			time.Sleep(50 * time.Millisecond) // keep it open: the bytes must be noticed, not the close
			return
		}
		io.WriteString(w, "real")
	})
	tr := app.transport()
	for range 3 {
		if code, _ := roundTrip(t, tr, "HEAD", "/", ""); code != 200 {
			t.Fatalf("HEAD: %d", code)
		}
		if code, body := roundTrip(t, tr, "GET", "/", ""); code != 200 || body != "real" {
			t.Errorf("GET after a HEAD with stray bytes: %d %q, want real", code, body)
		}
	}
}

// TestTransportReapsClosedIdle: a pooled connection the app closed is
// closed here too without waiting for a request to pick it.
func TestTransportReapsClosedIdle(t *testing.T) {
	app := newAppServer(t, echoApp)
	tr := app.transport()
	roundTrip(t, tr, "GET", "/", "")
	waitFor(t, "the app to see its connection idle", func() bool { return app.closeIdle() == 1 })
	waitFor(t, "the pool to drop the closed connection", func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return len(tr.idle) == 0
	})
}

// TestTransportStrayBytesTLS: over TLS, stray bytes may already sit
// decrypted inside crypto/tls, where no socket check sees them.
func TestTransportStrayBytesTLS(t *testing.T) {
	app := httptest.NewUnstartedServer(nil)
	var n atomic.Int64
	app.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/stray" {
			io.WriteString(w, "real")
			return
		}
		c, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		size := int(n.Load())
		msg := "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(size) + "\r\n\r\n" + strings.Repeat("x", size) +
			"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"
		c.Write([]byte(msg)) // one write: one TLS record
		time.Sleep(50 * time.Millisecond)
	})
	// Full-size records from the start, so the stray bytes share one
	// with the end of the body.
	app.TLS = &tls.Config{DynamicRecordSizingDisabled: true}
	app.StartTLS()
	t.Cleanup(app.Close)
	tr := NewTransport(TransportOptions{Network: "tcp", Address: strings.TrimPrefix(app.URL, "https://"), TLS: &tls.Config{}, ResponseHeaderTimeout: guard})
	cfg := app.Client().Transport.(*http.Transport).TLSClientConfig
	tr.dial = func(ctx context.Context) (net.Conn, error) {
		return tls.Dial("tcp", strings.TrimPrefix(app.URL, "https://"), cfg)
	}
	for _, size := range []int64{100, 4500, 9497, 10996, 12495} {
		n.Store(size)
		req, _ := http.NewRequest("GET", "http://app.example.com/stray", nil)
		res, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		// Read as ReverseProxy does, with a 32 KiB buffer: bufio then
		// reads straight into it, exactly what the body has left, and
		// crypto/tls keeps the rest of its record.
		buf := make([]byte, 32<<10)
		got := 0
		for {
			m, err := res.Body.Read(buf)
			got += m
			if err != nil {
				break
			}
		}
		res.Body.Close()
		if got != int(size) {
			t.Fatalf("body of %d bytes: read %d", size, got)
		}
		if code, body := roundTrip(t, tr, "GET", "/", ""); code != 200 || body != "real" {
			t.Errorf("after a %d-byte body with stray bytes: %d %q, want real", size, code, body)
		}
	}
}

// TestTransportCancelledDoesNotDial: a request whose context is done (an
// HTTP/2 stream the client reset) never makes the transport dial.
func TestTransportCancelledDoesNotDial(t *testing.T) {
	var dials atomic.Int32
	tr := NewTransport(TransportOptions{Dial: func(ctx context.Context) (net.Conn, error) {
		dials.Add(1)
		return nil, errors.New("dialed")
	}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://app.example.com/", nil)
	if _, err := tr.RoundTrip(req); !errors.Is(err, context.Canceled) {
		t.Errorf("RoundTrip: %v, want context.Canceled", err)
	}
	if n := dials.Load(); n != 0 {
		t.Errorf("dialed %d times for a cancelled request", n)
	}
}

// TestTransportRefusesBadTrailer: a trailer whose name is not a token
// (net/textproto keeps "X-T " as a name) fails the body's end, and the
// connection is not reused.
func TestTransportRefusesBadTrailer(t *testing.T) {
	app := newAppServer(t, func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T : 1\r\n\r\n")
		brw.Flush()
	})
	tr := app.transport()
	req, _ := http.NewRequest("GET", "http://app.example.com/", nil)
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(res.Body)
	res.Body.Close()
	if err == nil || !strings.Contains(err.Error(), "trailer") {
		t.Errorf("body read: %v, want an invalid trailer error", err)
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.idle) != 0 {
		t.Errorf("the connection went back to the pool")
	}
}
