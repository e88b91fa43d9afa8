//go:build unix

package h1

import "syscall"

// peeker looks at a socket without blocking or consuming anything. It is
// made once per upstream connection, so that the check before each reuse
// allocates nothing (a RawConn and a closure per call otherwise).
type peeker struct {
	rc    syscall.RawConn
	quiet bool
	b     [1]byte
	fn    func(fd uintptr) bool
}

func newPeeker(c syscall.Conn) *peeker {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	p := &peeker{rc: rc}
	p.fn = p.peek
	return p
}

func (p *peeker) peek(fd uintptr) bool {
	n, _, err := syscall.Recvfrom(int(fd), p.b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	p.quiet = n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
	return true
}

// quietNow reports whether nothing is readable on the socket: no close
// from the peer, no stray bytes.
func (p *peeker) quietNow() bool {
	if p == nil {
		return false
	}
	p.quiet = false
	return p.rc.Read(p.fn) == nil && p.quiet
}
