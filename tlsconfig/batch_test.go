package tlsconfig

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/aopguard/aopguard/internal/testpki"
)

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// batchPair returns a server Conn over a real TCP connection on 127.0.0.1
// (its socket writes counted) and the TLS client at the other end, both
// past the handshake.
func batchPair(t testing.TB) (*Conn, *countingConn, *tls.Conn) {
	t.Helper()
	ca := testpki.CA(t, "batch CA")
	srv := testpki.Server(t, ca, "app.example.com")
	raw, client := tcpPair(t)
	cc := &countingConn{Conn: raw}
	tr := &trackedConn{Conn: cc}
	sc := &Conn{Conn: tls.Server(tr, &tls.Config{Certificates: []tls.Certificate{srv.TLS()}, DynamicRecordSizingDisabled: true}), t: tr}
	cl := tls.Client(client, &tls.Config{ServerName: "app.example.com", RootCAs: testpki.Pool(ca)})
	t.Cleanup(func() { sc.Close(); cl.Close() })
	errc := make(chan error, 1)
	go func() { errc <- sc.Handshake() }()
	if err := cl.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return sc, cc, cl
}

// TestConnWriteBatchesRecords: a large write reaches the peer whole and
// in order, in a write(2) per four records rather than one per record,
// and nothing stays behind once Write returns.
func TestConnWriteBatchesRecords(t *testing.T) {
	tests := []struct {
		name      string
		size      int
		maxWrites int64
	}{
		{"one record", 1000, 1},
		{"exactly one record", recordPayload, 1},
		{"just over one record", recordPayload + 1, 1},
		{"1 MiB", 1 << 20, (1<<20)/(4*recordPayload) + 1},
		{"1 MiB and a bit", 1<<20 + 12345, (1<<20)/(4*recordPayload) + 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc, cc, cl := batchPair(t)
			data := make([]byte, tt.size)
			for i := range data {
				data[i] = byte(i * 7)
			}
			got := make(chan []byte, 1)
			go func() {
				b := make([]byte, len(data))
				_, err := io.ReadFull(cl, b)
				if err != nil {
					b = nil
				}
				got <- b
			}()
			before := cc.writes.Load()
			n, err := sc.Write(data)
			if n != len(data) || err != nil {
				t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(data))
			}
			writes := cc.writes.Load() - before
			// The peer gets everything with no further write from us.
			if b := <-got; !bytes.Equal(b, data) {
				t.Fatal("the peer did not read back what was written")
			}
			if writes > tt.maxWrites {
				t.Fatalf("%d bytes took %d socket writes, want at most %d", tt.size, writes, tt.maxWrites)
			}
			if sc.t.batch.buf != nil || sc.t.batch.users != 0 {
				t.Fatal("the batch buffer is still held after Write returned")
			}
		})
	}
}

// TestConnWriteConcurrent: large writes from several goroutines (as
// crypto/tls allows) each arrive contiguous, none lost or interleaved.
func TestConnWriteConcurrent(t *testing.T) {
	sc, _, cl := batchPair(t)
	const writers, size = 4, 100_000
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := sc.Write(bytes.Repeat([]byte{byte('a' + w)}, size)); err != nil {
				t.Error(err)
			}
		}()
	}
	all := make([]byte, writers*size)
	if _, err := io.ReadFull(cl, all); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	seen := map[byte]bool{}
	for i := 0; i < len(all); i += size {
		chunk := all[i : i+size]
		if seen[chunk[0]] || !bytes.Equal(chunk, bytes.Repeat(chunk[:1], size)) {
			t.Fatalf("write %d arrived interleaved with another or twice", i/size)
		}
		seen[chunk[0]] = true
	}
}

// TestConnWriteError: a large write to a peer that is gone fails rather
// than reporting bytes crypto/tls handed to the batch as sent.
func TestConnWriteError(t *testing.T) {
	sc, _, cl := batchPair(t)
	cl.NetConn().(*net.TCPConn).SetLinger(0)
	cl.NetConn().Close()
	var err error
	for range 50 { // the first writes may still fit the socket buffers
		if _, err = sc.Write(make([]byte, 1<<20)); err != nil {
			break
		}
	}
	if err == nil {
		t.Fatal("50 MiB written to a closed peer without an error")
	}
}

// BenchmarkConnWrite1MiB is one 1 MiB response body through Conn.Write.
func BenchmarkConnWrite1MiB(b *testing.B) {
	b.ReportAllocs()
	sc, _, cl := batchPair(b)
	go io.Copy(io.Discard, cl)
	data := make([]byte, 1<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := sc.Write(data); err != nil {
			b.Fatal(err)
		}
	}
}
