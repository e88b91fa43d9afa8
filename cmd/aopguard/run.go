package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"

	"github.com/aopguard/aopguard/cfips"
	"github.com/aopguard/aopguard/config"
	"github.com/aopguard/aopguard/internal/h1"
	"github.com/aopguard/aopguard/internal/logbuf"
	"github.com/aopguard/aopguard/metrics"
	"github.com/aopguard/aopguard/proxy"
	"github.com/aopguard/aopguard/rollout"
	"github.com/aopguard/aopguard/tlsconfig"
)

// flags are the run command's flags; set records which were given, since
// only those override the config file.
type flags struct {
	configFile, listen, admin, upstream, mode, zoneCA, cert, key, logLevel string
	adminPprof, validate                                                   bool
	logFlush                                                               time.Duration
	set                                                                    map[string]bool
}

const runUsage = `Usage: aopguard run [--config FILE] [--listen ADDR] [--upstream URL] [--mode off|log-only|require]
                    [--zone-ca cloudflare|FILE] [--cert FILE --key FILE] [--admin ADDR]
                    [--log-level debug|info|warn|error] [--log-flush DURATION]
                    [--admin-pprof] [--validate]

Terminates TLS on --listen, judges every client certificate under the policy
of its hostname (off, log-only or require), and forwards admitted requests to
the app at --upstream. Flags override the configuration file. With no
certificate configured, a self-signed one for localhost, 127.0.0.1 and ::1 is
made at start.

The admin listener (--admin, plain HTTP: keep it private) serves:
  GET /metrics       Prometheus metrics
  GET /healthz       "ok" while the process runs (liveness)
  GET /readyz        200 once the configuration is loaded, the listeners serve
                     and every ACME name has a certificate; 503 before that and
                     while draining (readiness)
  GET /status        the rollout report as JSON (what "aopguard status" reads)
  GET /              the rollout report as an HTML page
  POST /trust?host=H would H's running policy accept the PEM chain in the body
                     (what "aopguard cloudflare" asks before a change)
  GET /clients?host=H
                     the client certificates recently verified for H
  /debug/pprof/      Go's profiler, only with --admin-pprof

SIGHUP reloads the configuration (so do changes to the files it names);
SIGTERM and SIGINT drain and exit 0. Exit status: 0 after a clean shutdown,
2 for a bad invocation or configuration, 1 for runtime failures.

Flags:
`

func parseRunFlags(args []string, stdout io.Writer) (*flags, error) {
	f := &flags{set: map[string]bool{}}
	fs := newCommandFlags("aopguard run", runUsage, stdout)
	fs.StringVar(&f.configFile, "config", "", "read the configuration from `FILE` (YAML)")
	fs.StringVar(&f.listen, "listen", config.DefaultListen, "accept TLS connections on `ADDR`")
	fs.StringVar(&f.admin, "admin", config.DefaultAdmin, "serve the admin endpoints (/, /status, /metrics, /readyz, /healthz, /trust, /clients) on `ADDR`")
	fs.StringVar(&f.upstream, "upstream", "", "forward admitted requests to `URL` (http://, https://, h2c://, h2:// or unix:///path.sock)")
	fs.StringVar(&f.mode, "mode", config.DefaultMode, "judge client certificates in `MODE`: off, log-only or require")
	fs.StringVar(&f.zoneCA, "zone-ca", config.DefaultZoneCA, "trust `CA` for the zone: cloudflare (embedded) or a PEM bundle file")
	fs.StringVar(&f.cert, "cert", "", "serve the origin certificate chain in PEM `FILE`")
	fs.StringVar(&f.key, "key", "", "with the private key in PEM `FILE`")
	fs.StringVar(&f.logLevel, "log-level", "info", "log at `LEVEL`: debug, info, warn or error")
	fs.DurationVar(&f.logFlush, "log-flush", logFlushDefault, "write log lines below warn in batches (64 KiB at most), each within `DURATION` of being logged; 0 writes every line at once")
	fs.BoolVar(&f.adminPprof, "admin-pprof", false, "also serve Go's profiler at /debug/pprof/ on the admin listener")
	fs.BoolVar(&f.validate, "validate", false, "check the configuration and every file it names, then exit: 0 valid, 2 not")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, &exitError{exitConfig, fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
	if f.set["cert"] != f.set["key"] {
		return nil, &exitError{exitConfig, errors.New("--cert and --key go together")}
	}
	return f, nil
}

// config reads the config file (if any) and applies the flags given.
func (f *flags) config() (*config.Config, error) {
	c := config.Default()
	if f.configFile != "" {
		var err error
		if c, err = config.Load(f.configFile); err != nil {
			return nil, err
		}
	}
	override := map[string]*string{"listen": &c.Listen, "admin": &c.Admin, "upstream": &c.Upstream, "mode": &c.Mode, "zone-ca": &c.ZoneCA}
	vals := map[string]string{"listen": f.listen, "admin": f.admin, "upstream": f.upstream, "mode": f.mode, "zone-ca": f.zoneCA}
	for name, dst := range override {
		if f.set[name] {
			*dst = vals[name]
		}
	}
	if f.set["cert"] {
		c.Certificates = []config.KeyPair{{Cert: f.cert, Key: f.key}}
	}
	if err := c.Validate(); err != nil {
		var ce *config.Error
		if errors.As(err, &ce) && f.set[strings.ReplaceAll(ce.Key, "_", "-")] {
			ce.File = "--" + strings.ReplaceAll(ce.Key, "_", "-")
			ce.Key, ce.Line = "", 0
		}
		return nil, err
	}
	return c, nil
}

func runCommand(args []string, stdout, stderr io.Writer) int {
	f, err := parseRunFlags(args, stdout)
	if err != nil {
		if isHelp(err) {
			return exitOK
		}
		fmt.Fprintf(stderr, "aopguard: %v\n", err)
		return exitCode(err)
	}
	lvl, err := zerolog.ParseLevel(f.logLevel)
	if err != nil || f.logLevel == "" {
		fmt.Fprintf(stderr, "aopguard: --log-level: %q is not one of debug, info, warn, error\n", f.logLevel)
		return exitConfig
	}
	if f.logFlush < 0 {
		fmt.Fprintf(stderr, "aopguard: --log-flush: %v is negative\n", f.logFlush)
		return exitConfig
	}
	// One write per access line costs about as much CPU as parsing the
	// request: batch them. A crash loses at most the last interval's lines;
	// warnings and errors go out at once (see package logbuf).
	lw := logbuf.New(stderr, logBufferSize, f.logFlush)
	defer lw.Close()
	logger := newLogger(lw, lvl)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, f, logger); err != nil {
		logger.Error().Err(err).Msg("aopguard stopped")
		fmt.Fprintf(stderr, "aopguard: %v\n", err)
		return exitCode(err)
	}
	return exitOK
}

// Log batching: see package logbuf and --log-flush.
const (
	logFlushDefault = 100 * time.Millisecond
	logBufferSize   = 64 << 10
)

func newLogger(w io.Writer, lvl zerolog.Level) zerolog.Logger {
	zerolog.TimeFieldFormat = time.RFC3339Nano
	zerolog.DurationFieldUnit = time.Millisecond
	zerolog.DurationFieldInteger = false
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

// run serves until ctx is cancelled (SIGTERM/SIGINT), then drains.
func run(ctx context.Context, f *flags, logger zerolog.Logger) error {
	cfg, err := f.config()
	if err != nil {
		return &exitError{exitConfig, err}
	}
	m := metrics.New()
	m.ResolveRefused(tlsconfig.RefusedReasons)
	a, err := newApp(logger, m, cfg.ACME, cfg.Listen)
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			return &exitError{exitConfig, cfg.KeyError(ce.Key, ce.Err)} // with the file and the key's line
		}
		return err
	}
	defer a.close()
	a.lastHash = contentHash(watchedFiles(f.configFile, cfg))
	if err := a.apply(cfg); err != nil {
		m.Reloaded(false, 0)
		return &exitError{exitConfig, err}
	}
	if f.validate {
		logger.Info().Str("config", cfg.File).Int("policies", len(a.set().Policies())).Msg("configuration is valid")
		return nil
	}

	// TCP keep-alive stays off on the TLS port, as in nginx: HTTP ends idle
	// connections itself (idle_timeout), and Go's default would cost four
	// setsockopt calls per connection. WebSocket connections turn it on
	// when they are upgraded (tlsconfig.Conn.KeepAlive).
	ln, err := (&net.ListenConfig{KeepAlive: -1}).Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	adminLn, err := net.Listen("tcp", cfg.Admin)
	if err != nil {
		ln.Close()
		return fmt.Errorf("admin: %w", err)
	}
	tlsSrv := tlsconfig.NewServer(a.set, tlsconfig.ServerOptions{
		HandshakeTimeout: cfg.HandshakeTimeout,
		Sink:             sink{a},
		Source:           a.source,
		MaxConnections:   cfg.MaxConnections,
		MaxHandshakes:    cfg.MaxHandshakes,
		ACMETLS:          a.servers.acmeTLS(),
		ProxyProtocol:    proxyProtocol(cfg.ProxyProtocol),
	})
	handler := proxy.NewHandler(a.routes.Load, logger, proxy.HandlerOptions{Sink: sink{a}})
	srv := h1.NewServer(h1.Options{
		Handler:           handler,
		ConnContext:       proxy.ConnContext,
		Refused:           handler.Refused,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		ErrorLog:          log.New(levelWriter{logger, zerolog.DebugLevel, "http"}, "", 0),
	})
	admin := &http.Server{
		Handler:           a.adminHandler(f.adminPprof),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          log.New(levelWriter{logger, zerolog.DebugLevel, "admin"}, "", 0),
	}

	errc := make(chan error, 3)
	go func() { errc <- srv.Serve(tlsSrv.Listener(ln)) }()
	go func() { errc <- admin.Serve(adminLn) }()
	if cfg.ACME != nil && cfg.ACME.HTTPListen != "" {
		httpLn, err := net.Listen("tcp", cfg.ACME.HTTPListen)
		if err != nil {
			return fmt.Errorf("acme.http_listen: %w", err)
		}
		acmeHTTP := &http.Server{Handler: a.servers.httpHandler(ln.Addr().String()), ReadHeaderTimeout: 5 * time.Second,
			ErrorLog: log.New(levelWriter{logger, zerolog.DebugLevel, "acme-http"}, "", 0)}
		go func() { errc <- acmeHTTP.Serve(httpLn) }()
		defer acmeHTTP.Close()
	}
	if err := a.servers.manage(ctx); err != nil {
		return fmt.Errorf("acme: %w", err)
	}
	a.phase.Store(phaseServing)
	notifySystemd(logger, daemon.SdNotifyReady)
	logger.Info().Str("listen", ln.Addr().String()).Str("admin", adminLn.Addr().String()).
		Str("version", versionString()).Msg("aopguard serving")

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	rotate := time.NewTicker(ticketRotation)
	defer rotate.Stop()
	daily := time.NewTicker(24 * time.Hour)
	defer daily.Stop()
	refreshCtx, stopRefresh := context.WithCancel(ctx)
	defer stopRefresh()
	go a.refreshRanges(refreshCtx)
	reloads := newReloader()
	go reloads.run(refreshCtx, a, f)
	go a.watch(refreshCtx, f, reloads)
	for {
		select {
		case <-hup:
			reloads.request(true, "SIGHUP")
		case <-rotate.C:
			a.rotateTickets()
		case <-daily.C:
			a.checkExpiries()
		case err := <-errc:
			if !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serving: %w", err)
			}
		case <-ctx.Done():
			// /readyz fails from now on, so balancers stop sending while
			// in-flight requests finish; /healthz keeps answering.
			a.phase.Store(phaseDraining)
			notifySystemd(logger, daemon.SdNotifyStopping)
			logger.Info().Dur("drain_timeout", cfg.ShutdownTimeout).Msg("shutting down: draining in-flight requests")
			dctx, cancel := context.WithTimeout(context.Background(), a.config().ShutdownTimeout)
			defer cancel()
			if err := srv.Shutdown(dctx); err != nil {
				logger.Warn().Err(err).Msg("drain timed out; closing remaining connections")
				srv.Close()
			}
			admin.Close()
			logger.Info().Msg("stopped")
			return nil
		}
	}
}

// proxyProtocol converts the proxy_protocol settings (nil: off).
func proxyProtocol(c *config.ProxyProtocol) *tlsconfig.ProxyProtocol {
	if c == nil {
		return nil
	}
	return &tlsconfig.ProxyProtocol{Trusted: c.Trusted, Timeout: c.Timeout}
}

// notifySystemd tells systemd (Type=notify) what /readyz says: ready once
// serving, stopping at the start of a drain. Without NOTIFY_SOCKET in the
// environment it does nothing.
func notifySystemd(log zerolog.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn().Err(err).Str("state", state).Msg("notifying systemd failed")
	}
}

// ticketRotation is how often session ticket master keys rotate.
const ticketRotation = 24 * time.Hour

// levelWriter sends a standard-library logger's lines to zerolog.
type levelWriter struct {
	log       zerolog.Logger
	level     zerolog.Level
	component string
}

func (w levelWriter) Write(p []byte) (int, error) {
	w.log.WithLevel(w.level).Str("component", w.component).Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}

// app holds the state that outlives reloads.
type app struct {
	log     zerolog.Logger
	metrics *metrics.Metrics
	tickets *tlsconfig.TicketKeys
	servers *serverCerts
	ups     *proxy.Upstreams

	tracker *rollout.Tracker
	clients *clientLeaves

	mu        sync.Mutex // serialises apply, ticket rotation and range refreshes
	cfg       atomic.Pointer[config.Config]
	routes    atomic.Pointer[proxy.Routes]
	ips       atomic.Pointer[cfips.List]
	loaded    atomic.Pointer[[]metrics.Expiry] // certificates of the running configuration
	evidence  atomic.Pointer[evidenceCounters] // exported rollout evidence of the running policies
	phase     atomic.Int32                     // phaseStarting, phaseServing or phaseDraining, for /readyz
	policyIDs map[string]string                // policy name -> mode and CA fingerprints, to reset stale evidence
	refreshed *cfips.List                      // last good download of the ranges, if any
	lastHash  [32]byte                         // content of the watched files at the last load attempt
}

func newApp(logger zerolog.Logger, m *metrics.Metrics, acme *config.ACME, listen string) (*app, error) {
	tickets, err := tlsconfig.NewTicketKeys()
	if err != nil {
		return nil, err
	}
	servers, err := newServerCerts(logger, acme, listen)
	if err != nil {
		return nil, err
	}
	a := &app{log: logger, metrics: m, tickets: tickets, servers: servers,
		tracker: rollout.NewTracker(config.DefaultReadyMinRequests), policyIDs: map[string]string{}}
	a.clients = &clientLeaves{metrics: m, byHost: map[string][]clientLeaf{}, onNew: func(role, host string, c *x509.Certificate) {
		warnExpiry(logger, time.Now(), role, host, c)
	}}
	a.ips.Store(cfips.Default())
	a.ups = proxy.NewUpstreams(logger, meters{m})
	return a, nil
}

func (a *app) expiries() []metrics.Expiry {
	if l := a.loaded.Load(); l != nil {
		return *l
	}
	return nil
}

func (a *app) close()                 { a.servers.close() }
func (a *app) set() *tlsconfig.Set    { return a.routes.Load().Set }
func (a *app) config() *config.Config { return a.cfg.Load() }

func (a *app) rotateTickets() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.tickets.Rotate(); err != nil {
		a.log.Error().Err(err).Msg("session ticket key rotation failed; keeping current keys")
		return
	}
	a.set().RefreshTicketKeys(a.tickets)
}

// reload re-reads the configuration and every file it names. Any failure
// leaves the running state untouched. Only the reload loop (reloader)
// calls it, so reloads never overlap.
func (a *app) reload(f *flags, why string) {
	a.log.Info().Str("trigger", why).Msg("reloading configuration")
	cfg, err := f.config()
	files := a.config()
	if err == nil {
		files = cfg
	}
	sum := contentHash(watchedFiles(f.configFile, files))
	a.mu.Lock()
	a.lastHash = sum
	a.mu.Unlock()
	if err == nil {
		old := a.config()
		if cfg.Listen != old.Listen || cfg.Admin != old.Admin || cfg.MaxConnections != old.MaxConnections || !reflect.DeepEqual(cfg.ACME, old.ACME) ||
			cfg.MaxHandshakes != old.MaxHandshakes || cfg.HandshakeTimeout != old.HandshakeTimeout ||
			cfg.ReadHeaderTimeout != old.ReadHeaderTimeout || cfg.IdleTimeout != old.IdleTimeout || cfg.MaxHeaderBytes != old.MaxHeaderBytes ||
			!reflect.DeepEqual(cfg.ProxyProtocol, old.ProxyProtocol) {
			a.log.Warn().Msg("listen, admin, acme, proxy_protocol, limits and timeouts change only on restart; keeping the current ones")
		}
		err = a.apply(cfg)
	}
	if err != nil {
		a.metrics.Reloaded(false, 0)
		a.log.Error().Err(err).Msg("reload failed; still serving the previous configuration")
		return
	}
	a.log.Info().Msg("reload complete")
}

func (a *app) adminHandler(withPprof bool) http.Handler {
	mux := http.NewServeMux()
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("GET /metrics", a.metrics.Handler())
	mux.HandleFunc("GET /status", a.serveStatus)
	mux.HandleFunc("POST /trust", a.serveTrust)
	mux.HandleFunc("GET /clients", a.serveClients)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", a.serveReadyz)
	mux.HandleFunc("GET /{$}", a.servePage)
	return mux
}

// Phases of the process, for /readyz.
const (
	phaseStarting = iota // configuration loaded, listeners not serving yet
	phaseServing
	phaseDraining // SIGTERM: finishing in-flight requests
)

// serveReadyz is GET /readyz: 200 once the configuration is loaded, the
// listeners serve and every ACME-managed name has a certificate; 503
// before that and from the start of a drain. /healthz is liveness only.
func (a *app) serveReadyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	why := ""
	switch a.phase.Load() {
	case phaseStarting:
		why = "starting: listeners not serving yet"
	case phaseDraining:
		why = "draining: shutting down, finishing in-flight requests"
	default:
		if m := a.servers.missing(); len(m) > 0 {
			why = "waiting for ACME certificates: " + strings.Join(m, ", ")
		}
	}
	if why != "" {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, why+"\n")
		return
	}
	io.WriteString(w, "ready\n")
}

// meters adapts metrics.Metrics to proxy.Meters.
type meters struct{ m *metrics.Metrics }

func (x meters) Requests(host, class string) tlsconfig.Counter { return x.m.Requests(host, class) }
func (x meters) RequestDuration(host string) proxy.Observer    { return x.m.RequestDuration(host) }
func (x meters) UpstreamDuration(host string) proxy.Observer   { return x.m.UpstreamDuration(host) }
func (x meters) UpstreamErrors(host, kind string) tlsconfig.Counter {
	return x.m.UpstreamErrors(host, kind)
}
