//go:build unix

package tlsconfig

import (
	"io"
	"net"
	"sync"
	"syscall"
)

var readChunks = sync.Pool{New: func() any { return new([readChunk]byte) }}

// readAvailable waits until c (a TCP connection) has bytes to read, then
// reads up to readChunk of them in one system call and returns them in a
// buffer of their own size (at least min). Waiting holds no buffer: the
// chunk is borrowed only for the read. ok is false when c is not a socket
// it can read so (the caller then reads c itself). Deadlines on c apply.
func readAvailable(c net.Conn, min int) (buf []byte, ok bool, err error) {
	sc, isSock := c.(syscall.Conn)
	if !isSock {
		return nil, false, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, false, nil
	}
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		chunk := readChunks.Get().(*[readChunk]byte)
		defer readChunks.Put(chunk)
		n, e := syscall.Read(int(fd), chunk[:])
		switch {
		case e == syscall.EAGAIN || e == syscall.EINTR:
			return false // wait until readable (or read again)
		case e != nil:
			rerr = e
		case n == 0:
			rerr = io.EOF
		default:
			buf = append(make([]byte, 0, max(n, min)), chunk[:n]...)
		}
		return true
	})
	if err != nil {
		return nil, true, err
	}
	return buf, true, rerr
}

// waitReadable waits until tc has bytes to read, or its peer closed, or
// its read deadline passed (then the error is a timeout), reading nothing.
func waitReadable(tc *net.TCPConn) error {
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	var b [1]byte
	return rc.Read(func(fd uintptr) bool {
		for {
			_, _, e := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			if e != syscall.EINTR {
				return e != syscall.EAGAIN // EAGAIN: nothing yet, wait
			}
		}
	})
}
