//go:build !unix

package tlsconfig

import "net"

// readAvailable is a Unix optimisation (see read_unix.go); elsewhere the
// caller reads c itself.
func readAvailable(c net.Conn, min int) (buf []byte, ok bool, err error) { return nil, false, nil }

// waitReadable is a Unix optimisation (see read_unix.go); elsewhere the
// next Read waits.
func waitReadable(tc *net.TCPConn) error { return nil }
