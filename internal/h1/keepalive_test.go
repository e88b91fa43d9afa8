package h1

import (
	"bytes"
	"net/http"
	"sync/atomic"
	"testing"
)

// keepAliveConn is a memConn that records KeepAlive calls, as a listener's
// connection type that leaves TCP keep-alive off offers them.
type keepAliveConn struct {
	memConn
	calls atomic.Int32
}

func (c *keepAliveConn) KeepAlive() error { c.calls.Add(1); return nil }

// TestHijackKeepAlive: a connection handed to a protocol upgrade gets TCP
// keep-alive turned on when it offers a KeepAlive method; one served as
// HTTP does not.
func TestHijackKeepAlive(t *testing.T) {
	for _, tc := range []struct {
		name   string
		hijack bool
		want   int32
	}{
		{"hijacked", true, 1},
		{"served", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := NewServer(Options{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !tc.hijack {
					w.Write([]byte("ok"))
					return
				}
				c, _, err := http.NewResponseController(w).Hijack()
				if err != nil {
					t.Errorf("Hijack: %v", err)
					return
				}
				c.Close()
			})})
			c := &keepAliveConn{memConn: memConn{in: bytes.NewReader([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))}}
			srv.ServeConn(c, nil)
			if got := c.calls.Load(); got != tc.want {
				t.Errorf("KeepAlive called %d times, want %d", got, tc.want)
			}
		})
	}
}
