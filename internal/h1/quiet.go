package h1

import (
	"crypto/tls"
	"errors"
	"net"
	"syscall"
	"time"
)

// quiet reports, without blocking or consuming anything, whether nothing
// is readable on an idle connection: no close from the app, no stray
// bytes. For TLS the check looks at the socket under it: an idle TLS
// connection has nothing to say either (its session tickets arrived
// before the first response). The caller owns pc (the pool's lock, or
// taken out of the pool).
func (pc *upConn) quiet() bool {
	c := pc.Conn
	if tc, ok := c.(*tls.Conn); ok {
		// First what crypto/tls has already read and decrypted: with an
		// expired deadline a read returns it, or times out at once
		// without touching the socket (and a timeout is not sticky).
		var b [1]byte
		tc.SetReadDeadline(time.Unix(1, 0))
		n, err := tc.Read(b[:])
		tc.SetReadDeadline(time.Time{})
		if ne, ok := errors.AsType[net.Error](err); n > 0 || !ok || !ne.Timeout() {
			return false
		}
		c = tc.NetConn()
	}
	if pc.peek == nil {
		sc, ok := c.(syscall.Conn)
		if !ok {
			return false
		}
		pc.peek = newPeeker(sc)
	}
	return pc.peek.quietNow()
}
