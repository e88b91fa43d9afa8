package h1

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// serve runs a Server for h on a plain TCP listener on 127.0.0.1.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, h, ln)
	return ln.Addr().String()
}

// serveOn runs a Server for h on ln until the test ends.
func serveOn(t testing.TB, h http.Handler, ln net.Listener) *Server {
	srv := NewServer(Options{Handler: h, ReadHeaderTimeout: guard, IdleTimeout: guard})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return srv
}

// TestBodyReadElsewhere: a handler whose transport reads the request body
// in a goroutine of its own (as an HTTP/2 client does) while the response
// is written, "100 Continue" owed or not, races with nothing (-race) and
// the connection carries the next request.
func TestBodyReadElsewhere(t *testing.T) {
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := make(chan string, 1)
		go func() {
			b, _ := io.ReadAll(r.Body)
			r.Body.Close()
			got <- string(b)
		}()
		w.Header().Set("X-Early", "1")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, <-got)
	}))
	for _, tt := range []struct{ name, raw string }{
		{"length", "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"},
		{"chunked", "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"expect", "POST /a HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(guard))
			br := bufio.NewReader(c)
			io.WriteString(c, tt.raw)
			for {
				res, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(res.Body)
				if res.StatusCode == http.StatusContinue {
					continue
				}
				if res.StatusCode != 200 || (string(b) != "hello" && string(b) != "") {
					t.Fatalf("%d %q", res.StatusCode, b)
				}
				if res.Close {
					return // answered before the body: the connection goes
				}
				break
			}
			io.WriteString(c, "GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
			if res, err := http.ReadResponse(br, nil); err != nil || res.StatusCode != 200 {
				t.Fatalf("next request: %v %v", res, err)
			}
		})
	}
}
