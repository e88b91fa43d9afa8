// Package cffake is a stand-in for the parts of Cloudflare's API that
// aopguard uses, for tests: zones, the tls_client_auth zone setting,
// zone-level and per-hostname Authenticated Origin Pulls, and proxied DNS
// records. It answers with Cloudflare's envelope (success, errors,
// messages, result, result_info), paginates lists, answers 429 with
// Retry-After when told to, 403 for a token without a permission, and
// moves uploads and links from pending_deployment to active after a few
// reads. Nothing here is for production use.
package cffake

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aopguard/aopguard/certs"
)

// PerPage is the page size of paginated lists; small, so that tests page.
const PerPage = 2

// Cert is an uploaded certificate.
type Cert struct {
	ID       string
	PEM      string
	Key      string // the uploaded private key, for Linked callbacks
	Status   string
	Uploaded time.Time
	reads    int
}

// Link is a per-hostname association; Voided ones answer enabled null.
type Link struct {
	CertID  string
	Enabled bool
	Voided  bool
	Status  string
	reads   int
}

// Zone is one zone's state.
type Zone struct {
	ID, Name  string
	Global    bool
	ZoneLevel bool
	ZoneCerts []*Cert
	HostCerts []*Cert
	Links     map[string]*Link
	Proxied   []string
}

// Server is the fake API. Lock Mu to read or change state while it runs.
type Server struct {
	*httptest.Server
	Token string
	Mu    sync.Mutex
	Zones []*Zone
	// Deny maps a path fragment to refusal with 403 (a token lacking that
	// permission), e.g. "/dns_records".
	Deny []string
	// RateLimit is how many of the next requests get 429 Retry-After: 0.
	RateLimit int
	// ReadsToActive is how many status reads a new upload or link stays
	// pending_deployment for (default 2).
	ReadsToActive int
	// Linked, if set, is called (without Mu held) when a hostname's link
	// becomes active, with the certificate and key it presents.
	Linked func(hostname string, cert tls.Certificate)
	// Writes counts every POST, PUT, PATCH and DELETE that reached the
	// fake; Requests logs "METHOD path?query" of every request; Auth
	// logs every Authorization header seen.
	Writes   int
	Requests []string
	Limited  int
	nextID   int
}

// New starts a fake with one zone.
func New(t testing.TB, token, zoneID, zoneName string) *Server {
	s := &Server{Token: token, ReadsToActive: 2}
	s.Zones = []*Zone{{ID: zoneID, Name: zoneName, Links: map[string]*Link{}}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// Zone returns the first zone.
func (s *Server) Zone() *Zone { return s.Zones[0] }

// APIURL is the API root to give the client.
func (s *Server) APIURL() string { return s.Server.URL + "/client/v4/" }

type apiErr struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func write(w http.ResponseWriter, status int, result any, info any, errs ...apiErr) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	env := map[string]any{"success": status < 300, "errors": errs, "messages": []any{}, "result": result}
	if errs == nil {
		env["errors"] = []any{}
	}
	if info != nil {
		env["result_info"] = info
	}
	json.NewEncoder(w).Encode(env)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	var fire func()
	s.Mu.Lock()
	defer func() {
		s.Mu.Unlock()
		if fire != nil {
			fire()
		}
	}()
	s.Requests = append(s.Requests, r.Method+" "+r.URL.RequestURI())
	if r.Header.Get("Authorization") != "Bearer "+s.Token {
		write(w, http.StatusBadRequest, nil, nil, apiErr{6003, "Invalid request headers"})
		return
	}
	if s.RateLimit > 0 {
		s.RateLimit--
		s.Limited++
		w.Header().Set("Retry-After", "0")
		write(w, http.StatusTooManyRequests, nil, nil, apiErr{971, "Please wait and consider throttling your request speed"})
		return
	}
	for _, d := range s.Deny {
		if strings.Contains(r.URL.Path, d) {
			write(w, http.StatusForbidden, nil, nil, apiErr{10000, "Authentication error"})
			return
		}
	}
	if r.Method != http.MethodGet {
		s.Writes++
	}
	path, ok := strings.CutPrefix(r.URL.Path, "/client/v4/zones")
	if !ok {
		write(w, http.StatusNotFound, nil, nil, apiErr{7003, "Could not route to " + r.URL.Path})
		return
	}
	if path == "" && r.Method == http.MethodGet {
		var out []any
		for _, z := range s.Zones {
			if n := r.URL.Query().Get("name"); n == "" || n == z.Name {
				out = append(out, map[string]any{"id": z.ID, "name": z.Name, "status": "active"})
			}
		}
		page(w, r, out)
		return
	}
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	var z *Zone
	for _, x := range s.Zones {
		if x.ID == parts[0] {
			z = x
		}
	}
	if z == nil {
		write(w, http.StatusNotFound, nil, nil, apiErr{7003, "Could not route to /zones/" + parts[0] + ": perhaps your object identifier is invalid?"})
		return
	}
	rest := strings.Join(parts[1:], "/")
	body := map[string]any{}
	if r.Body != nil && r.Method != http.MethodGet {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		json.Unmarshal(b, &body)
	}
	switch {
	case rest == "settings/tls_client_auth" && r.Method == http.MethodGet:
		v := "off"
		if z.Global {
			v = "on"
		}
		write(w, 200, map[string]any{"id": "tls_client_auth", "value": v, "editable": true, "modified_on": "2026-01-01T00:00:00Z"}, nil)
	case rest == "dns_records" && r.Method == http.MethodGet:
		var out []any
		for i, n := range z.Proxied {
			out = append(out, map[string]any{"id": fmt.Sprintf("rec%d", i), "name": n, "type": "A", "content": "192.0.2.1", "proxied": true, "ttl": 1})
		}
		page(w, r, out)
	case rest == "origin_tls_client_auth/settings" && r.Method == http.MethodGet:
		write(w, 200, map[string]any{"enabled": z.ZoneLevel}, nil)
	case rest == "origin_tls_client_auth/settings" && r.Method == http.MethodPut:
		z.ZoneLevel, _ = body["enabled"].(bool)
		write(w, 200, map[string]any{"enabled": z.ZoneLevel}, nil)
	case rest == "origin_tls_client_auth" && r.Method == http.MethodGet:
		var out []any
		for _, c := range z.ZoneCerts {
			out = append(out, s.certJSON(c, false))
		}
		write(w, 200, out, nil)
	case rest == "origin_tls_client_auth" && r.Method == http.MethodPost:
		c, err := s.upload(body)
		if err != nil {
			write(w, http.StatusBadRequest, nil, nil, apiErr{1402, err.Error()})
			return
		}
		z.ZoneCerts = append(z.ZoneCerts, c)
		write(w, 200, s.certJSON(c, false), nil)
	case rest == "origin_tls_client_auth/hostnames/certificates" && r.Method == http.MethodGet:
		var out []any
		for _, c := range z.HostCerts {
			out = append(out, s.certJSON(c, false))
		}
		write(w, 200, out, nil)
	case rest == "origin_tls_client_auth/hostnames/certificates" && r.Method == http.MethodPost:
		if len(z.HostCerts) >= 10 {
			write(w, http.StatusBadRequest, nil, nil, apiErr{1413, "10 hostname certificates per zone are allowed"})
			return
		}
		c, err := s.upload(body)
		if err != nil {
			write(w, http.StatusBadRequest, nil, nil, apiErr{1402, err.Error()})
			return
		}
		z.HostCerts = append(z.HostCerts, c)
		write(w, 200, s.certJSON(c, false), nil)
	case rest == "origin_tls_client_auth/hostnames" && r.Method == http.MethodPut:
		cfg, _ := body["config"].([]any)
		var out []any
		for _, e := range cfg {
			m, _ := e.(map[string]any)
			host, _ := m["hostname"].(string)
			id, _ := m["cert_id"].(string)
			en, _ := m["enabled"].(bool)
			if m["enabled"] == nil { // null voids the association
				delete(z.Links, host)
				out = append(out, map[string]any{"hostname": host, "cert_id": id, "enabled": nil})
				continue
			}
			if find(z.HostCerts, id) == nil {
				write(w, http.StatusBadRequest, nil, nil, apiErr{1417, "certificate " + id + " does not exist"})
				return
			}
			z.Links[host] = &Link{CertID: id, Enabled: en, Status: "pending_deployment"}
			out = append(out, map[string]any{"hostname": host, "cert_id": id, "enabled": en, "status": "pending_deployment"})
		}
		write(w, 200, out, nil)
	case strings.HasPrefix(rest, "origin_tls_client_auth/hostnames/certificates/"):
		id := strings.TrimPrefix(rest, "origin_tls_client_auth/hostnames/certificates/")
		c := find(z.HostCerts, id)
		if c == nil {
			write(w, http.StatusNotFound, nil, nil, apiErr{1404, "certificate not found"})
			return
		}
		if r.Method == http.MethodDelete {
			for h, l := range z.Links {
				if l.CertID == id && l.Enabled {
					write(w, http.StatusBadRequest, nil, nil, apiErr{1418, "certificate is in use by " + h})
					return
				}
			}
			c.Status = "deleted"
			var keep []*Cert
			for _, x := range z.HostCerts {
				if x != c {
					keep = append(keep, x)
				}
			}
			z.HostCerts = keep
			write(w, 200, s.certJSON(c, false), nil)
			return
		}
		write(w, 200, s.certJSON(c, true), nil)
	case strings.HasPrefix(rest, "origin_tls_client_auth/hostnames/") && r.Method == http.MethodGet:
		host := strings.TrimPrefix(rest, "origin_tls_client_auth/hostnames/")
		l, ok := z.Links[host]
		if !ok {
			write(w, http.StatusNotFound, nil, nil, apiErr{1404, "hostname not found"})
			return
		}
		l.reads++
		if l.Status == "pending_deployment" && l.reads > s.ReadsToActive {
			l.Status = "active"
			if c := find(z.HostCerts, l.CertID); c != nil && s.Linked != nil && l.Enabled {
				if pair, err := tls.X509KeyPair([]byte(c.PEM), []byte(c.Key)); err == nil {
					linked := s.Linked
					fire = func() { linked(host, pair) }
				}
			}
		}
		c := find(z.HostCerts, l.CertID)
		res := map[string]any{"hostname": host, "cert_id": l.CertID, "enabled": l.Enabled, "status": l.Status,
			"created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}
		if l.Voided {
			res["enabled"] = nil
		}
		if c != nil {
			cj := s.certJSON(c, false)
			res["cert_status"], res["certificate"], res["expires_on"], res["issuer"] = cj["status"], cj["certificate"], cj["expires_on"], cj["issuer"]
			res["serial_number"], res["cert_uploaded_on"] = cj["serial_number"], cj["uploaded_on"]
		}
		write(w, 200, res, nil)
	case strings.HasPrefix(rest, "origin_tls_client_auth/") && (r.Method == http.MethodGet || r.Method == http.MethodDelete):
		id := strings.TrimPrefix(rest, "origin_tls_client_auth/")
		c := find(z.ZoneCerts, id)
		if c == nil {
			write(w, http.StatusNotFound, nil, nil, apiErr{1404, "certificate not found"})
			return
		}
		if r.Method == http.MethodDelete {
			c.Status = "deleted"
		}
		write(w, 200, s.certJSON(c, r.Method == http.MethodGet), nil)
	default:
		write(w, http.StatusNotFound, nil, nil, apiErr{7003, "Could not route to " + r.URL.Path})
	}
}

func find(cs []*Cert, id string) *Cert {
	for _, c := range cs {
		if c.ID == id {
			return c
		}
	}
	return nil
}

// upload checks a certificate and key the way Cloudflare does (they parse
// and match) and stores them, pending deployment.
func (s *Server) upload(body map[string]any) (*Cert, error) {
	cert, _ := body["certificate"].(string)
	key, _ := body["private_key"].(string)
	if _, err := tls.X509KeyPair([]byte(cert), []byte(key)); err != nil {
		return nil, fmt.Errorf("the certificate and private key do not match or do not parse: %v", err)
	}
	return s.Add(cert, key, "pending_deployment"), nil
}

// Add stores a certificate without an upload request (for setting up
// state); the caller appends it to a zone. Mu must be held while serving.
func (s *Server) Add(certPEM, keyPEM, status string) *Cert {
	s.nextID++
	return &Cert{ID: fmt.Sprintf("%08x-0000-4000-8000-%012x", s.nextID, s.nextID), PEM: certPEM, Key: keyPEM, Status: status,
		Uploaded: time.Date(2026, 1, 1, 0, 0, s.nextID, 0, time.UTC)}
}

// certJSON renders a certificate; read counts a status read, which moves
// a pending upload along.
func (s *Server) certJSON(c *Cert, read bool) map[string]any {
	if read {
		c.reads++
		if c.Status == "pending_deployment" && c.reads > s.ReadsToActive {
			c.Status = "active"
		}
	}
	m := map[string]any{"id": c.ID, "status": c.Status, "certificate": c.PEM, "uploaded_on": c.Uploaded.Format(time.RFC3339Nano),
		"signature": "ECDSA-SHA256"}
	if chain, err := certs.ParseBundle([]byte(c.PEM)); err == nil {
		m["expires_on"] = chain[0].NotAfter.UTC().Format(time.RFC3339)
		m["issuer"] = chain[0].Issuer.String()
		m["serial_number"] = chain[0].SerialNumber.String()
	}
	return m
}

// page answers a list with page and per_page and Cloudflare's result_info.
func page(w http.ResponseWriter, r *http.Request, all []any) {
	n, _ := strconv.Atoi(r.URL.Query().Get("page"))
	if n < 1 {
		n = 1
	}
	from := min((n-1)*PerPage, len(all))
	to := min(from+PerPage, len(all))
	out := all[from:to]
	if out == nil {
		out = []any{}
	}
	write(w, 200, out, map[string]any{"page": n, "per_page": PerPage, "count": len(out), "total_count": len(all),
		"total_pages": (len(all) + PerPage - 1) / PerPage})
}

// WriteCount returns Writes, under Mu.
func (s *Server) WriteCount() int {
	s.Mu.Lock()
	defer s.Mu.Unlock()
	return s.Writes
}

// Hostnames returns the linked hostnames, sorted.
func (z *Zone) Hostnames() []string {
	var out []string
	for h := range z.Links {
		out = append(out, h)
	}
	sort.Strings(out)
	return out
}

// Leaf parses a certificate's leaf.
func (c *Cert) Leaf() *x509.Certificate {
	chain, err := certs.ParseBundle([]byte(c.PEM))
	if err != nil {
		return nil
	}
	return chain[0]
}
