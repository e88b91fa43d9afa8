package h1

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// memConn is a connection whose client sent in and nothing more.
type memConn struct {
	mu     sync.Mutex
	in     *bytes.Reader
	out    bytes.Buffer
	closed bool
}

func (c *memConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.in.Read(p)
}

func (c *memConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.out.Write(p)
}

func (c *memConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return nil
}

var memAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}

func (c *memConn) LocalAddr() net.Addr              { return memAddr }
func (c *memConn) RemoteAddr() net.Addr             { return memAddr }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// seenRequest is what the handler got.
type seenRequest struct {
	method, target, body string
	whole                bool // the body was read to its end
}

// FuzzServer feeds raw bytes to the HTTP/1.1 server and checks that the
// handler receives only requests the server framed as net/http's parser
// frames them (the server may refuse more, never frame differently),
// nothing after a refusal or a cut-off body, and that nothing panics.
func FuzzServer(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /s HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n0\r\n\r\nGET /s HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
		"GET http://a/x HTTP/1.1\r\nHost: b\r\n\r\n",
		"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var mu sync.Mutex
		var seen []seenRequest
		srv := NewServer(Options{
			MaxHeaderBytes: 4096,
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
				mu.Lock()
				seen = append(seen, seenRequest{method: r.Method, target: r.RequestURI, body: string(body), whole: err == nil})
				mu.Unlock()
				io.WriteString(w, "ok")
			}),
		})
		c := &memConn{in: bytes.NewReader(in)}
		srv.ServeConn(c, nil) // returns when the connection is done
		mu.Lock()
		defer mu.Unlock()

		// The reference: net/http's own framing of the same bytes.
		var ref []seenRequest
		br := bufio.NewReader(bytes.NewReader(in))
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				break
			}
			body, err := io.ReadAll(req.Body)
			if req.Method == "OPTIONS" && req.RequestURI == "*" {
				continue // answered by the server, never handed on
			}
			ref = append(ref, seenRequest{method: req.Method, target: req.RequestURI, body: string(body), whole: err == nil})
			if err != nil {
				break
			}
		}
		if len(seen) > len(ref) {
			t.Fatalf("handler got %d requests, net/http frames %d: %+v vs %+v", len(seen), len(ref), seen, ref)
		}
		for i, s := range seen {
			r := ref[i]
			if s.method != r.method || s.target != r.target {
				t.Fatalf("request %d: handler got %s %s, net/http frames %s %s", i, s.method, s.target, r.method, r.target)
			}
			if s.whole && (!r.whole || s.body != r.body) {
				t.Fatalf("request %d: handler got body %q, net/http frames %q (whole: %v)", i, s.body, r.body, r.whole)
			}
			if !s.whole && i != len(seen)-1 {
				t.Fatalf("request %d was cut off, yet %d more reached the handler", i, len(seen)-1-i)
			}
		}

		// After a refusal nothing more is answered, so nothing more was
		// handed on.
		out := bufio.NewReader(bytes.NewReader(c.out.Bytes()))
		answered := 0
		for {
			res, err := http.ReadResponse(out, nil)
			if err != nil {
				break
			}
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode < 200 {
				continue
			}
			switch res.StatusCode {
			case 400, 417, 431, 501, 505:
				if rest, _ := io.ReadAll(out); len(rest) > 0 {
					t.Fatalf("%d was followed by more: %q", res.StatusCode, rest)
				}
				if answered != len(seen) {
					t.Fatalf("%d answers before the %d, %d requests handed on", answered, res.StatusCode, len(seen))
				}
			}
			if string(body) == "ok" {
				answered++ // the handler's, not "OPTIONS *"'s
			}
		}
	})
}
