//go:build unix

package tlsconfig

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// TestReadAvailable: one call takes everything that has arrived (up to
// readChunk), in a buffer of its own, and reports the end of the stream
// and deadlines as a read would; a connection that is not a socket is
// left to the caller.
func TestReadAvailable(t *testing.T) {
	t.Parallel()
	payload := bytes.Repeat([]byte("0123456789abcdef"), 192) // 3 KB: a large ClientHello
	for _, tc := range []struct {
		name    string
		send    []byte
		close   bool
		want    []byte
		wantErr error
	}{
		{"all that arrived", payload, false, payload, nil},
		{"at most a chunk", append(append([]byte(nil), payload...), payload...), false, append(append([]byte(nil), payload...), payload...)[:readChunk], nil},
		{"peer closed", nil, true, nil, io.EOF},
		{"nothing before the deadline", nil, false, nil, os.ErrDeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, client := tcpPair(t)
			if len(tc.send) > 0 {
				if _, err := client.Write(tc.send); err != nil {
					t.Fatal(err)
				}
				// Let it all arrive: readAvailable takes what is there.
				time.Sleep(50 * time.Millisecond)
			}
			if tc.close {
				client.Close()
			}
			dl := 10 * time.Second // against hangs only
			if tc.wantErr == os.ErrDeadlineExceeded {
				dl = 50 * time.Millisecond
			}
			srv.SetReadDeadline(time.Now().Add(dl))
			got, ok, err := readAvailable(srv, 512)
			if !ok {
				t.Fatal("a TCP connection was not read")
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("read %d bytes, want %d", len(got), len(tc.want))
			}
			if got != nil && cap(got) < 512 {
				t.Errorf("capacity %d, want at least the 512 asked for", cap(got))
			}
		})
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, ok, _ := readAvailable(a, 0); ok {
		t.Error("readAvailable read a net.Pipe")
	}
}
