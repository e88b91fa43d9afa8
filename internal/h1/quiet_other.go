//go:build !unix

package h1

import "syscall"

// peeker cannot look at a socket without consuming on this system: an
// idle connection counts as quiet, and a request that finds it closed by
// the app is retried on a new one (see Transport.RoundTrip).
type peeker struct{}

func newPeeker(syscall.Conn) *peeker { return &peeker{} }

func (*peeker) quietNow() bool { return true }
