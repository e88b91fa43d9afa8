package tlsconfig

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"
)

// acceptOne serves one connection from a Server with the zone policy
// (require) and returns it.
func acceptOne(t *testing.T, ln net.Listener) *Conn {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r.c.(*Conn)
	case <-time.After(10 * time.Second):
		t.Fatal("no connection accepted")
	}
	return nil
}

// TestCloseNotify: Close sends close_notify unless the peer has closed
// first (its close_notify made Read return io.EOF), as nginx does; what
// was written before Close arrives either way.
func TestCloseNotify(t *testing.T) {
	t.Parallel()
	f := getFixture(t)
	set := mustSet(t, PolicySpec{Mode: Require, CAs: caList(f.zoneCA)}, nil, mustTickets(t), nil)
	for _, ver := range versions {
		for _, tc := range []struct {
			name       string
			peerFirst  bool // the client sends close_notify before the server closes
			wantNotify bool // the server's close_notify reaches the client
		}{
			{"server closes first", false, true},
			{"peer closed first", true, false},
		} {
			t.Run(ver.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				inner, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				ln, raw := listenAndDial(t, set, inner)
				// No ClientSessionCache: a TLS 1.3 server then sends no
				// session ticket, so all that follows "x" is close_notify.
				client := tls.Client(raw, clientConfig(t, ver.v, "", tlsCert(f.zoneLeaf)))
				hsErr := make(chan error, 1)
				go func() { hsErr <- client.Handshake() }()
				srv := acceptOne(t, ln)
				if err := <-hsErr; err != nil {
					t.Fatal(err)
				}
				srv.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := srv.Write([]byte("x")); err != nil {
					t.Fatal(err)
				}
				if tc.peerFirst {
					if err := client.CloseWrite(); err != nil { // close_notify
						t.Fatal(err)
					}
					if n, err := srv.Read(make([]byte, 1)); n != 0 || err != io.EOF {
						t.Fatalf("server Read = %d, %v; want 0, io.EOF", n, err)
					}
				}
				if err := srv.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				// On the wire after the handshake: the record carrying "x",
				// then close_notify or nothing. (Read through the client,
				// both ends look alike: crypto/tls takes an EOF at a record
				// boundary for a close_notify.)
				rest, err := io.ReadAll(raw)
				if err != nil {
					t.Fatalf("reading what the server sent: %v", err)
				}
				records := 0
				for len(rest) >= 5 {
					records++
					rest = rest[min(5+(int(rest[3])<<8|int(rest[4])), len(rest)):]
				}
				if want := map[bool]int{false: 1, true: 2}[tc.wantNotify]; records != want || len(rest) != 0 {
					t.Errorf("the server sent %d records (%d stray bytes) after the handshake, want %d", records, len(rest), want)
				}
			})
		}
	}
}
