// Package metrics holds aopguard's Prometheus metrics in a registry of their
// own. Label values come only from configuration (host names, "_zone") and
// fixed enums, never from what a client sends, so cardinality is bounded by
// the config file.
package metrics

import (
	"crypto/x509"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/aopguard/aopguard/certs"
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
	handshakes    *prometheus.CounterVec
	algorithms    *prometheus.CounterVec
	reqDuration   *prometheus.HistogramVec
	upDuration    *prometheus.HistogramVec
	upErrors      *prometheus.CounterVec
	health        *prometheus.CounterVec
	refused       *prometheus.CounterVec
	evidence      *prometheus.CounterVec
	policyInfo    *prometheus.GaugeVec
	minRequests   prometheus.Gauge
	crlNextUpdate *prometheus.GaugeVec
	crlStale      *prometheus.CounterVec
	collectors    []prometheus.Collector

	policyMu sync.Mutex
	policies map[[2]string]bool // host and policy_id of the running policies
}

// latencyBuckets span a fast local app (1 ms) to a slow one (30 s).
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

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
			Help: "TLS handshakes that failed for reasons other than a refused client certificate (timeouts, protocol errors); connections closed before a handshake began are in aopguard_connections_refused_total.",
		}),
	}
	m.handshakes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "aopguard_tls_handshakes_total",
		Help: "TLS handshakes by policy, TLS version, resumption and result (ok, refused, error).",
	}, []string{"host", "version", "resumed", "result"})
	m.algorithms = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "aopguard_tls_handshake_algorithms_total",
		Help: "TLS handshakes judged under a policy (admitted or refused), by negotiated key-agreement group (X25519MLKEM768 is post-quantum) and the client certificate's signature algorithm (ML-DSA-* are post-quantum; none without a certificate).",
	}, []string{"host", "key_agreement", "cert_signature"})
	m.reqDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "aopguard_request_duration_seconds",
		Help:    "Time from reading a request to the end of its response, by policy.",
		Buckets: latencyBuckets,
	}, []string{"host"})
	m.upDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "aopguard_upstream_duration_seconds",
		Help:    "Time until the upstream app's response headers arrived, by policy.",
		Buckets: latencyBuckets,
	}, []string{"host"})
	m.upErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "aopguard_upstream_errors_total",
		Help: "Requests the upstream app did not answer: error is unavailable (502) or timeout (504).",
	}, []string{"host", "error"})
	m.health = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "aopguard_health_checks_total",
		Help: "Requests from Cloudflare's load-balancer health checks (User-Agent Cloudflare-Traffic-Manager), counted apart from visitor traffic.",
	}, []string{"host", "result"})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "aopguard_connections_refused_total",
		Help: "Connections closed before their TLS handshake, by reason (PROXY protocol header refused, missing or invalid; plain HTTP; not TLS; no ClientHello in time).",
	}, []string{"reason"})
	m.evidence = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "aopguard_rollout_evidence_total",
		Help: "What the rollout verdict counts: each request judged under a policy and each handshake it refused, by result, reason and source; health checks are counted apart. policy_id names the policy's mode and CAs (see aopguard_policy_info).",
	}, []string{"host", "policy_id", "result", "reason", "source"})
	m.policyInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "aopguard_policy_info",
		Help: "1 for each running policy: its mode, and policy_id, a digest of its mode and CAs that changes when the rollout evidence restarts.",
	}, []string{"host", "mode", "policy_id"})
	m.minRequests = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "aopguard_rollout_min_requests",
		Help: "Cloudflare requests in the last hour a log-only policy needs before it can be called ready to enforce (ready_min_requests).",
	})
	m.crlNextUpdate = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "aopguard_crl_next_update_timestamp_seconds",
		Help: "NextUpdate of the CRL of each policy that loads one, as a Unix time: past it the CRL is stale.",
	}, []string{"host"})
	m.crlStale = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "aopguard_crl_stale_total",
		Help: "Times a policy was found working from a CRL past its NextUpdate (at each load and daily), by what crl_stale does: refuse or warn.",
	}, []string{"host", "action"})
	m.collectors = []prometheus.Collector{m.verifications, m.expiry, m.reloads, m.lastReload, m.requests, m.handshakeErrs,
		m.handshakes, m.algorithms, m.reqDuration, m.upDuration, m.upErrors, m.health, m.refused, m.evidence, m.policyInfo, m.minRequests,
		m.crlNextUpdate, m.crlStale}
	m.Registry.MustRegister(m.collectors...)
	m.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Names returns the name of every aopguard_ metric, for checking alert
// rules and dashboards against what is really exported.
func (m *Metrics) Names() []string {
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range m.collectors {
			c.Describe(ch)
		}
		close(ch)
	}()
	var out []string
	for d := range ch {
		// Desc has no accessor for its name; its String form is stable:
		// Desc{fqName: "name", ...}.
		s := d.String()
		if i := strings.Index(s, `fqName: "`); i >= 0 {
			rest := s[i+len(`fqName: "`):]
			out = append(out, rest[:strings.IndexByte(rest, '"')])
		}
	}
	return out
}

// ResolveRefused creates the refused-connection series for each reason, so
// they read 0 before the first refusal.
func (m *Metrics) ResolveRefused(reasons []string) {
	for _, r := range reasons {
		m.refused.WithLabelValues(r)
	}
}

// Refused counts a connection closed before its TLS handshake; reason is
// one of a fixed set (tlsconfig.RefusedReasons).
func (m *Metrics) Refused(reason string) { m.refused.WithLabelValues(reason).Inc() }

// Handshake counts one TLS handshake. version is "1.2", "1.3" or
// "unknown"; result is ok, refused or error.
func (m *Metrics) Handshake(host, version string, resumed bool, result string) {
	m.handshakes.WithLabelValues(host, version, strconv.FormatBool(resumed), result).Inc()
}

// HandshakeAlgorithms counts one handshake judged under a policy by its
// key-agreement group and client certificate signature algorithm; both
// come from fixed sets (tlsconfig.KeyAgreementName, SignatureName).
func (m *Metrics) HandshakeAlgorithms(host, keyAgreement, certSignature string) {
	m.algorithms.WithLabelValues(host, keyAgreement, certSignature).Inc()
}

// RequestDuration returns the request latency histogram for a policy.
func (m *Metrics) RequestDuration(host string) prometheus.Observer {
	return m.reqDuration.WithLabelValues(host)
}

// UpstreamDuration returns the upstream latency histogram for a policy.
func (m *Metrics) UpstreamDuration(host string) prometheus.Observer {
	return m.upDuration.WithLabelValues(host)
}

// UpstreamErrors returns the upstream error counter for a policy and kind
// (unavailable or timeout).
func (m *Metrics) UpstreamErrors(host, kind string) prometheus.Counter {
	return m.upErrors.WithLabelValues(host, kind)
}

// HealthCheck counts a Cloudflare load-balancer health check.
func (m *Metrics) HealthCheck(host, result string) {
	m.health.WithLabelValues(host, result).Inc()
}

// ClientExpiry reports the NotAfter of a client certificate seen under a
// policy; Forget removes it. Only certificates that verified are reported,
// so the subject label comes from a trusted CA, not from any client, and
// callers bound how many they keep per policy.
func (m *Metrics) ClientExpiry(host, subject string, notAfter float64) {
	m.expiry.WithLabelValues("client", host, subject).Set(notAfter)
}

// ForgetClientExpiry removes a client certificate's expiry series.
func (m *Metrics) ForgetClientExpiry(host, subject string) {
	m.expiry.DeleteLabelValues("client", host, subject)
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

// RolloutPolicy is one running policy as the fleet-wide rollout report
// sees it.
type RolloutPolicy struct {
	Host, Mode string
	// ID is a digest of the mode and CAs: replicas with the same policy
	// share it, and evidence gathered under another one is not counted.
	ID string
	// Outcomes are the result and reason pairs the policy can record; their
	// series start at 0, so Prometheus sees the first increment of each.
	Outcomes [][2]string
	// Sources are the sources of traffic (cloudflare, other).
	Sources []string
}

// SetRolloutPolicies replaces the running policies and the traffic a ready
// verdict needs. Evidence series of a policy that is gone or whose ID
// changed are removed, as the rollout report forgets them.
func (m *Metrics) SetRolloutPolicies(list []RolloutPolicy, minRequests int) {
	m.policyMu.Lock()
	defer m.policyMu.Unlock()
	now := map[[2]string]bool{}
	m.policyInfo.Reset()
	for _, p := range list {
		now[[2]string{p.Host, p.ID}] = true
		m.policyInfo.WithLabelValues(p.Host, p.Mode, p.ID).Set(1)
		for _, r := range []string{"success", "failed", "none"} {
			m.health.WithLabelValues(p.Host, r) // from 0 too, for the fleet's count of health checks
		}
		for _, o := range p.Outcomes {
			for _, src := range p.Sources {
				m.evidence.WithLabelValues(p.Host, p.ID, o[0], o[1], src)
			}
		}
	}
	for old := range m.policies {
		if !now[old] {
			m.evidence.DeletePartialMatch(prometheus.Labels{"host": old[0], "policy_id": old[1]})
		}
	}
	m.policies = now
	m.minRequests.Set(float64(minRequests))
}

// RolloutEvidence returns the evidence counter for one label set. Resolve
// it when the policy is loaded, not per request.
func (m *Metrics) RolloutEvidence(host, policyID, result, reason, source string) prometheus.Counter {
	return m.evidence.WithLabelValues(host, policyID, result, reason, source)
}

// HandshakeError counts a failed handshake that was not a policy refusal.
func (m *Metrics) HandshakeError() { m.handshakeErrs.Inc() }

// Expiry is one certificate to report in the expiry gauge.
type Expiry struct {
	Role string // zone_ca, host_ca or server
	Host string // policy name; "" for server certificates
	Cert *x509.Certificate
}

// SetExpiries replaces the expiry series of loaded certificates (every role
// but client), so certificates dropped by a reload stop being reported.
func (m *Metrics) SetExpiries(list []Expiry) {
	for _, role := range []string{"zone_ca", "host_ca", "server"} {
		m.expiry.DeletePartialMatch(prometheus.Labels{"role": role})
	}
	for _, e := range list {
		m.expiry.WithLabelValues(e.Role, e.Host, certs.Describe(e.Cert)).Set(float64(e.Cert.NotAfter.Unix()))
	}
}

// SetCRLNextUpdates replaces the CRL series with those of the running
// policies: host (policy name) to NextUpdate, as a Unix time.
func (m *Metrics) SetCRLNextUpdates(next map[string]float64) {
	m.crlNextUpdate.Reset()
	for host, t := range next {
		m.crlNextUpdate.WithLabelValues(host).Set(t)
	}
}

// CRLStale counts a policy found working from a stale CRL; action is
// refuse or warn.
func (m *Metrics) CRLStale(host, action string) { m.crlStale.WithLabelValues(host, action).Inc() }

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
