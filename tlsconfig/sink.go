package tlsconfig

import "net"

// Sink receives every verdict aopguard reaches: each handshake a Server
// ends and each request answered under a policy. It is the one place
// verdicts are recorded (counted, given to the rollout report, logged);
// neither the Server nor the request handler records them itself.
type Sink interface {
	// Handshake is called once per handshake, after it ends.
	Handshake(Handshake)
	// Request is called once per request answered under a policy, after
	// its response.
	Request(Request)
}

// Handshake is the outcome of one handshake.
type Handshake struct {
	// Info is what the handshake learned. Info.Policy is nil when it
	// failed before a policy was chosen.
	Info *ConnInfo
	// Remote is the client's address (a trusted PROXY header's, if any).
	Remote net.Addr
	// Err is nil for an admitted connection, a *RejectError when a
	// Require policy refused the client certificate, or what else ended
	// the handshake (UnknownHostError, RefusedError, ErrACMEChallenge,
	// ErrOverloaded, a TLS error).
	Err error
}

// Judged returns the policy and verdict a handshake reached, when it
// reached one: for an admitted connection and for a refused certificate.
// Each such verdict is counted once (Policy.Count).
func (h Handshake) Judged() (*Policy, Verdict, bool) {
	if h.Err == nil && h.Info.Policy != nil {
		return h.Info.Policy, h.Info.Verdict, true
	}
	if rej, ok := h.Err.(*RejectError); ok {
		return rej.Policy, rej.Verdict, true
	}
	return nil, Verdict{}, false
}

// Request is a request's verdict, after its response.
type Request struct {
	// Policy is the policy the request's Host selected, and Verdict the
	// connection's certificate's verdict under it.
	Policy  *Policy
	Verdict Verdict
	// Conn is what the connection's handshake learned.
	Conn *ConnInfo
	// Rejudged reports that Policy is not the one the handshake was
	// judged under (another host, or the same one after a reload), so
	// Verdict was reached for this request and is counted on its own.
	Rejudged bool
	// Status is the response's status code.
	Status int
	// HealthCheck marks Cloudflare load-balancer health checks
	// (User-Agent containing Cloudflare-Traffic-Manager).
	HealthCheck bool
}
