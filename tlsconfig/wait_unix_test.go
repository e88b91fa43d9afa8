//go:build unix

package tlsconfig

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// TestWaitReadable: a connection parked between requests waits on the
// socket without reading: it ends at the read deadline with a timeout,
// returns nil when the client sends (whose bytes the next Read still
// gets) or closes (the Read then says EOF), and returns an error when the
// connection is closed under it.
func TestWaitReadable(t *testing.T) {
	for _, tc := range []string{"client sends", "client closes", "closed locally"} {
		t.Run(tc, func(t *testing.T) {
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv, client := zoneClientConn(t, inner)
			defer srv.Close()

			// As the HTTP engine parks a connection: a read that timed out.
			srv.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			var b [16]byte
			if n, err := srv.Read(b[:]); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("first read: %d, %v; want a timeout", n, err)
			}
			srv.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			if err := srv.WaitReadable(); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("WaitReadable with nothing sent: %v, want a timeout", err)
			}

			srv.SetReadDeadline(time.Now().Add(10 * time.Second))
			go func() {
				time.Sleep(20 * time.Millisecond)
				switch tc {
				case "client sends":
					client.Write([]byte("GET / HTTP/1.1\r\n"))
				case "client closes":
					client.Close()
				case "closed locally":
					srv.Close()
				}
			}()
			err = srv.WaitReadable()
			switch tc {
			case "client sends":
				if err != nil {
					t.Fatalf("WaitReadable: %v", err)
				}
				if n, err := srv.Read(b[:]); string(b[:n]) != "GET / HTTP/1.1\r\n" {
					t.Fatalf("read after the wait: %q, %v", b[:n], err)
				}
			case "client closes":
				if err != nil {
					t.Fatalf("WaitReadable: %v", err)
				}
				if n, err := srv.Read(b[:]); n != 0 || err != io.EOF {
					t.Fatalf("read after the wait: %d, %v; want EOF", n, err)
				}
			case "closed locally":
				if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("WaitReadable on a closed connection: %v, want a close error", err)
				}
			}
		})
	}
}
