//go:build unix

package tlsconfig

import (
	"context"
	"net"
	"syscall"
	"testing"
)

// soKeepAlive reads SO_KEEPALIVE of the socket under c.
func soKeepAlive(t *testing.T, c *Conn) int {
	t.Helper()
	rc, err := c.t.Conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

// TestKeepAlive: on a listener that leaves TCP keep-alive off (aopguard's
// does), a connection has none until KeepAlive turns it on (a WebSocket).
func TestKeepAlive(t *testing.T) {
	t.Parallel()
	inner, err := (&net.ListenConfig{KeepAlive: -1}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := zoneClientConn(t, inner)
	defer srv.Close()
	if v := soKeepAlive(t, srv); v != 0 {
		t.Fatalf("SO_KEEPALIVE = %d on an accepted connection, want 0", v)
	}
	if err := srv.KeepAlive(); err != nil {
		t.Fatal(err)
	}
	if v := soKeepAlive(t, srv); v == 0 {
		t.Fatal("SO_KEEPALIVE still 0 after KeepAlive")
	}
}
