package main

import (
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/aopguard/aopguard/certs"
	"github.com/aopguard/aopguard/tlsconfig"
)

// trustAnswer is POST /trust's reply: the running policy's verdict on a
// certificate chain for a host, as a handshake would get it.
type trustAnswer struct {
	Host        string `json:"host"`
	Policy      string `json:"policy"`
	Mode        string `json:"mode"`
	Trusted     bool   `json:"trusted"`
	Result      string `json:"result"`
	Reason      string `json:"reason,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
}

// clientsAnswer is GET /clients' reply: the client certificates the policy
// serving a host verified recently (at most maxClientLeaves).
type clientsAnswer struct {
	Host    string       `json:"host"`
	Policy  string       `json:"policy"`
	Clients []clientSeen `json:"clients"`
}

type clientSeen struct {
	Fingerprint string    `json:"fingerprint"`
	Subject     string    `json:"subject"`
	NotAfter    time.Time `json:"not_after"`
	// FromCloudflare is when a connection from Cloudflare's ranges last
	// presented it; absent if none has.
	FromCloudflare *time.Time `json:"from_cloudflare,omitempty"`
}

// maxTrustBody bounds the PEM POST /trust reads.
const maxTrustBody = 64 << 10

// serveTrust is POST /trust?host=H with a PEM certificate chain (leaf
// first) as the body: would the running policy for H accept it?
func (a *app) serveTrust(w http.ResponseWriter, r *http.Request) {
	host := r.URL.Query().Get("host")
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxTrustBody))
	if err != nil {
		http.Error(w, "reading the certificate: "+err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	chain, err := certs.ParseBundle(body)
	if err != nil {
		http.Error(w, "the body is not a PEM certificate chain: "+err.Error(), http.StatusBadRequest)
		return
	}
	p := a.set().Match(host)
	v := p.Verify(chain)
	ans := trustAnswer{Host: host, Policy: p.Name(), Mode: p.Mode().String(), Trusted: v.Result == tlsconfig.Success,
		Result: v.Result.String(), Reason: v.Reason, Fingerprint: certs.Fingerprint(chain[0].Raw)}
	if p.Mode() == tlsconfig.Off {
		ans.Reason = "the policy is off: it checks no client certificate"
	}
	writeJSON(w, ans)
}

// serveClients is GET /clients?host=H.
func (a *app) serveClients(w http.ResponseWriter, r *http.Request) {
	host := r.URL.Query().Get("host")
	p := a.set().Match(host)
	ans := clientsAnswer{Host: host, Policy: p.Name(), Clients: []clientSeen{}}
	for _, l := range a.clients.recent(p.Name()) {
		c := clientSeen{Fingerprint: l.fingerprint, Subject: certs.Describe(l.cert), NotAfter: l.cert.NotAfter.UTC()}
		if !l.fromCloudflare.IsZero() {
			t := l.fromCloudflare.UTC()
			c.FromCloudflare = &t
		}
		ans.Clients = append(ans.Clients, c)
	}
	writeJSON(w, ans)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
