// Package metrics holds aopguard's Prometheus metrics in a registry of their
// own. Label values come only from configuration (host names, "_zone") and
// fixed enums, never from what a client sends, so cardinality is bounded by
// the config file.
package metrics

import (
	"crypto/x509"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the set of aopguard's collectors.
type Metrics struct {
	Registry *prometheus.Registry

	verifications *prometheus.CounterVec
	expiry        *prometheus.GaugeVec
	reloads       *prometheus.CounterVec
	lastReload    prometheus.Gauge
	requests      *prometheus.CounterVec
	handshakeErrs prometheus.Counter
}

// New registers every collector in a fresh registry, plus the Go runtime
// and process collectors.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aopguard_client_cert_verifications_total",
			Help: "Client certificate verdicts: one per TLS handshake (resumed included) and one per Host re-check.",
		}, []string{"host", "mode", "result", "reason", "action", "source"}),
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "aopguard_certificate_expiry_timestamp_seconds",
			Help: "NotAfter of every loaded CA (role zone_ca, host_ca) and server certificate (role server), as a Unix time.",
		}, []string{"role", "host", "subject"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aopguard_config_reloads_total",
			Help: "Configuration reloads by result.",
		}, []string{"result"}),
		lastReload: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "aopguard_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last configuration load that took effect.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "aopguard_requests_total",
			Help: "HTTP requests by the policy that judged them and status class.",
		}, []string{"host", "code_class"}),
		handshakeErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "aopguard_tls_handshake_errors_total",
			Help: "TLS handshakes that failed for reasons other than a refused client certificate (timeouts, protocol errors, scanners).",
		}),
	}
	m.Registry.MustRegister(m.verifications, m.expiry, m.reloads, m.lastReload, m.requests, m.handshakeErrs,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Verification returns the counter for one label set. Resolve it once, when
// a policy is built, not per handshake.
func (m *Metrics) Verification(host, mode, result, reason, action, source string) prometheus.Counter {
	return m.verifications.WithLabelValues(host, mode, result, reason, action, source)
}

// Requests returns the request counter for a policy and status class
// ("2xx".."5xx").
func (m *Metrics) Requests(host, class string) prometheus.Counter {
	return m.requests.WithLabelValues(host, class)
}

// HandshakeError counts a failed handshake that was not a policy refusal.
func (m *Metrics) HandshakeError() { m.handshakeErrs.Inc() }

// Expiry is one certificate to report in the expiry gauge.
type Expiry struct {
	Role string // zone_ca, host_ca or server
	Host string // policy name; "" for server certificates
	Cert *x509.Certificate
}

// SetExpiries replaces the expiry gauge's contents, so certificates dropped
// by a reload stop being reported.
func (m *Metrics) SetExpiries(list []Expiry) {
	m.expiry.Reset()
	for _, e := range list {
		m.expiry.WithLabelValues(e.Role, e.Host, subject(e.Cert)).Set(float64(e.Cert.NotAfter.Unix()))
	}
}

// Reloaded records the outcome of a configuration load.
func (m *Metrics) Reloaded(ok bool, unixTime float64) {
	if ok {
		m.reloads.WithLabelValues("success").Inc()
		m.lastReload.Set(unixTime)
		return
	}
	m.reloads.WithLabelValues("failure").Inc()
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

func subject(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return c.Subject.CommonName
	}
	return c.Subject.String()
}
