package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/aopguard/aopguard/internal/testpki"
	"github.com/aopguard/aopguard/tlsconfig"
)

// grpcApp is a real gRPC server behind aopguard: the standard health
// service, whose behaviour each call picks with the first part of its
// service name ("ok/<case>", "hang/<case>", ...). It records what every
// call saw, by service name.
type grpcApp struct {
	grpc_health_v1.UnimplementedHealthServer
	url string // h2c://… or h2://…

	mu    sync.Mutex
	calls map[string]*grpcCall
}

// grpcCall is what the app saw of one call.
type grpcCall struct {
	md       metadata.MD
	deadline time.Time // zero: the call had none
	err      error     // the handler context's error when the handler returned
	started  chan struct{}
	ended    chan struct{}
}

// deniedMessage is a grpc-message that needs percent-encoding on the wire.
const deniedMessage = "not for you: 100% sure ✓"

// newGRPCApp serves the app on 127.0.0.1: scheme "h2c" in cleartext (gRPC
// servers speak HTTP/2 with prior knowledge), "h2" over TLS with the test
// server certificate.
func newGRPCApp(t testing.TB, pki *testPKI, scheme string) *grpcApp {
	t.Helper()
	a := &grpcApp{calls: map[string]*grpcCall{}}
	var opts []grpc.ServerOption
	if scheme == "h2" {
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{pki.server.TLS()}})))
	}
	s := grpc.NewServer(opts...)
	grpc_health_v1.RegisterHealthServer(s, a)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	a.url = scheme + "://" + ln.Addr().String()
	return a
}

// call returns the record of the call for service, made on first use.
func (a *grpcApp) call(service string) *grpcCall {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.calls[service]
	if !ok {
		c = &grpcCall{started: make(chan struct{}), ended: make(chan struct{})}
		a.calls[service] = c
	}
	return c
}

// reached reports whether a call for service reached the app.
func (a *grpcApp) reached(service string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.calls[service]
	return ok
}

func (a *grpcApp) begin(ctx context.Context, service string) *grpcCall {
	c := a.call(service)
	c.md, _ = metadata.FromIncomingContext(ctx)
	c.deadline, _ = ctx.Deadline()
	close(c.started)
	return c
}

func (a *grpcApp) end(ctx context.Context, c *grpcCall) {
	c.err = ctx.Err()
	close(c.ended)
}

// waitEnded returns the call for service once its handler returned.
func (a *grpcApp) waitEnded(t *testing.T, service string) *grpcCall {
	t.Helper()
	c := a.call(service)
	select {
	case <-c.ended:
		return c
	case <-time.After(guard):
		t.Fatalf("the app's handler for %q did not return", service)
		return nil
	}
}

func (a *grpcApp) Check(ctx context.Context, req *grpc_health_v1.HealthCheckRequest) (*grpc_health_v1.HealthCheckResponse, error) {
	if req.Service == "bench" { // no record: a benchmark repeats it
		return &grpc_health_v1.HealthCheckResponse{Status: grpc_health_v1.HealthCheckResponse_SERVING}, nil
	}
	c := a.begin(ctx, req.Service)
	defer a.end(ctx, c)
	kind, _, _ := strings.Cut(req.Service, "/")
	switch kind {
	case "ok":
		grpc.SetHeader(ctx, metadata.Pairs("x-app-header", "h"))
		grpc.SetTrailer(ctx, metadata.Pairs("x-app-trailer", "t"))
		return &grpc_health_v1.HealthCheckResponse{Status: grpc_health_v1.HealthCheckResponse_SERVING}, nil
	case "denied":
		grpc.SetTrailer(ctx, metadata.Pairs("x-app-trailer", "t"))
		return nil, status.Error(codes.PermissionDenied, deniedMessage)
	case "hang": // until the caller (or aopguard) gives up
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return nil, status.Errorf(codes.NotFound, "unknown service %q", req.Service)
}

func (a *grpcApp) Watch(req *grpc_health_v1.HealthCheckRequest, stream grpc.ServerStreamingServer[grpc_health_v1.HealthCheckResponse]) error {
	ctx := stream.Context()
	c := a.begin(ctx, req.Service)
	defer a.end(ctx, c)
	send := func(s grpc_health_v1.HealthCheckResponse_ServingStatus) error {
		return stream.Send(&grpc_health_v1.HealthCheckResponse{Status: s})
	}
	kind, _, _ := strings.Cut(req.Service, "/")
	switch kind {
	case "three":
		for _, s := range watchStatuses {
			if err := send(s); err != nil {
				return err
			}
		}
		stream.SetTrailer(metadata.Pairs("x-app-trailer", "t"))
		return nil
	case "midway":
		if err := send(grpc_health_v1.HealthCheckResponse_SERVING); err != nil {
			return err
		}
		return status.Error(codes.Aborted, "gave up midway")
	case "hold": // one message, then until the caller goes away
		if err := send(grpc_health_v1.HealthCheckResponse_SERVING); err != nil {
			return err
		}
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
	return status.Errorf(codes.NotFound, "unknown service %q", req.Service)
}

var watchStatuses = []grpc_health_v1.HealthCheckResponse_ServingStatus{
	grpc_health_v1.HealthCheckResponse_SERVING,
	grpc_health_v1.HealthCheckResponse_NOT_SERVING,
	grpc_health_v1.HealthCheckResponse_SERVING,
}

// grpcClient returns a real gRPC client whose connection goes to the proxy
// with the TLS options o, asking for authority (the :authority, i.e. Host).
func (h *harness) grpcClient(t testing.TB, o clientOpts, authority string) grpc_health_v1.HealthClient {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+h.addr,
		grpc.WithTransportCredentials(credentials.NewTLS(h.tlsConfig(o))),
		grpc.WithAuthority(authority))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return grpc_health_v1.NewHealthClient(cc)
}

// grpcEnv: the zone (require, the edge's CA), open.example.com (log-only,
// CA A) and a.example.com (require, CA A) all forward to one gRPC app.
type grpcEnv struct {
	pki *testPKI
	app *grpcApp
	h   *harness
}

func newGRPCEnv(t *testing.T, scheme string) *grpcEnv {
	t.Helper()
	e := &grpcEnv{pki: newPKI(t)}
	e.app = newGRPCApp(t, e.pki, scheme)
	e.h = newHarness(t, e.pki, harnessConfig{
		zone: tlsconfig.PolicySpec{Mode: tlsconfig.Require, CAs: cas(e.pki.zoneCA), Upstream: e.app.url},
		hosts: []tlsconfig.PolicySpec{
			{Name: "open.example.com", Mode: tlsconfig.LogOnly, CAs: cas(e.pki.caA), Upstream: e.app.url},
			{Name: "a.example.com", Mode: tlsconfig.Require, CAs: cas(e.pki.caA), Upstream: e.app.url},
		},
		upstreamRoots: testpki.Pool(e.pki.serverCA),
	})
	return e
}

// edge returns a client connection as Cloudflare's edge makes it, to name
// (SNI and authority), which must fall under the zone policy.
func (e *grpcEnv) edge(t *testing.T, name string) grpc_health_v1.HealthClient {
	return e.h.grpcClient(t, clientOpts{sni: name, cert: e.pki.clientZone}, name)
}

// accessLine waits for the access line of a gRPC call to method asked for
// host.
func (e *grpcEnv) accessLine(t *testing.T, host, method string) map[string]any {
	t.Helper()
	path := "/grpc.health.v1.Health/" + method
	return e.h.log.wait(t, "for "+host+path, func(m map[string]any) bool {
		return m["message"] == "request" && m["host"] == host && m["path"] == path
	})
}

// wantAccess checks an access line's status, protocol and verdict
// ("success", "none", as the access line spells them).
func wantAccess(t *testing.T, m map[string]any, status int, verify string) {
	t.Helper()
	if m["status"] != float64(status) || m["proto"] != "HTTP/2.0" || m["method"] != "POST" || m["verify"] != verify {
		t.Errorf("access line %v, want status %d, proto HTTP/2.0, method POST, verify %s", m, status, verify)
	}
}

// wantAppSaw checks the verification headers and :authority the app saw.
func wantAppSaw(t *testing.T, c *grpcCall, authority, verify, fp string) {
	t.Helper()
	if got := c.md.Get(":authority"); !slices.Equal(got, []string{authority}) {
		t.Errorf("app saw :authority %q, want %q", got, authority)
	}
	var verifyKeys []string
	for k := range c.md {
		if strings.HasPrefix(k, "x-client-") || strings.HasPrefix(k, "x_client_") {
			verifyKeys = append(verifyKeys, k)
		}
	}
	slices.Sort(verifyKeys)
	wantKeys := []string{"x-client-verify"}
	if fp != "" {
		wantKeys = []string{"x-client-cert-fingerprint", "x-client-verify"}
	}
	if !slices.Equal(verifyKeys, wantKeys) {
		t.Errorf("app saw verification headers %q, want %q", verifyKeys, wantKeys)
	}
	if got := c.md.Get("x-client-verify"); !slices.Equal(got, []string{verify}) {
		t.Errorf("app saw X-Client-Verify %q, want %q", got, verify)
	}
	if got := c.md.Get("x-client-cert-fingerprint"); fp != "" && !slices.Equal(got, []string{fp}) {
		t.Errorf("app saw X-Client-Cert-Fingerprint %q, want %q", got, fp)
	}
	if got := c.md.Get("x-forwarded-proto"); !slices.Equal(got, []string{"https"}) {
		t.Errorf("app saw X-Forwarded-Proto %q, want https", got)
	}
}

// TestGRPC runs a real gRPC client (with the edge's client certificate,
// over real TLS) through aopguard to a real gRPC server, over each kind of
// HTTP/2 upstream.
func TestGRPC(t *testing.T) {
	for _, scheme := range []string{"h2c", "h2"} {
		t.Run(scheme, func(t *testing.T) {
			e := newGRPCEnv(t, scheme)
			fp := fingerprint(e.pki.clientZone)
			bg := context.Background()

			t.Run("unary", func(t *testing.T) {
				var header, trailer metadata.MD
				res, err := e.edge(t, "unary.example.com").Check(bg, &grpc_health_v1.HealthCheckRequest{Service: "ok/unary"},
					grpc.Header(&header), grpc.Trailer(&trailer))
				if err != nil || res.Status != grpc_health_v1.HealthCheckResponse_SERVING {
					t.Fatalf("Check = %v, %v; want SERVING", res, err)
				}
				if !slices.Equal(header.Get("x-app-header"), []string{"h"}) || !slices.Equal(trailer.Get("x-app-trailer"), []string{"t"}) {
					t.Errorf("header %v, trailer %v: want the app's x-app-header and x-app-trailer", header, trailer)
				}
				wantAppSaw(t, e.app.waitEnded(t, "ok/unary"), "unary.example.com", "SUCCESS", fp)
				wantAccess(t, e.accessLine(t, "unary.example.com", "Check"), 200, "success")
				// Metrics as for any upstream: the first call of this
				// harness is a 2xx with an upstream latency.
				if n, u := e.h.requests.get(tlsconfig.ZoneName, "2xx"), e.h.requests.get("upstream", tlsconfig.ZoneName); n != 1 || u != 1 {
					t.Errorf("requests 2xx = %d, upstream latencies = %d; want 1 and 1", n, u)
				}
			})

			t.Run("status and trailers", func(t *testing.T) {
				var trailer metadata.MD
				_, err := e.edge(t, "denied.example.com").Check(bg, &grpc_health_v1.HealthCheckRequest{Service: "denied/x"}, grpc.Trailer(&trailer))
				if st := status.Convert(err); st.Code() != codes.PermissionDenied || st.Message() != deniedMessage {
					t.Errorf("Check error = %v, want PermissionDenied %q", err, deniedMessage)
				}
				if !slices.Equal(trailer.Get("x-app-trailer"), []string{"t"}) {
					t.Errorf("trailer %v, want the app's x-app-trailer", trailer)
				}
				// gRPC answers errors with HTTP 200 and the status in the
				// trailers.
				wantAccess(t, e.accessLine(t, "denied.example.com", "Check"), 200, "success")
			})

			t.Run("server streaming", func(t *testing.T) {
				stream, err := e.edge(t, "stream.example.com").Watch(bg, &grpc_health_v1.HealthCheckRequest{Service: "three/x"})
				if err != nil {
					t.Fatal(err)
				}
				var got []grpc_health_v1.HealthCheckResponse_ServingStatus
				for {
					res, err := stream.Recv()
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatalf("Recv after %v: %v", got, err)
					}
					got = append(got, res.Status)
				}
				if !slices.Equal(got, watchStatuses) {
					t.Errorf("received %v, want %v", got, watchStatuses)
				}
				if tr := stream.Trailer(); !slices.Equal(tr.Get("x-app-trailer"), []string{"t"}) {
					t.Errorf("trailer %v, want the app's x-app-trailer", tr)
				}
				wantAppSaw(t, e.app.waitEnded(t, "three/x"), "stream.example.com", "SUCCESS", fp)
				wantAccess(t, e.accessLine(t, "stream.example.com", "Watch"), 200, "success")
			})

			t.Run("stream ends with an error", func(t *testing.T) {
				stream, err := e.edge(t, "midway.example.com").Watch(bg, &grpc_health_v1.HealthCheckRequest{Service: "midway/x"})
				if err != nil {
					t.Fatal(err)
				}
				if res, err := stream.Recv(); err != nil || res.Status != grpc_health_v1.HealthCheckResponse_SERVING {
					t.Fatalf("first Recv = %v, %v", res, err)
				}
				_, err = stream.Recv()
				if st := status.Convert(err); st.Code() != codes.Aborted || st.Message() != "gave up midway" {
					t.Errorf("second Recv error = %v, want Aborted \"gave up midway\"", err)
				}
			})

			t.Run("deadline reaches the app", func(t *testing.T) {
				ctx, cancel := context.WithTimeout(bg, time.Minute)
				defer cancel()
				client := e.edge(t, "deadline.example.com")
				if _, err := client.Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: "ok/deadline"}); err != nil {
					t.Fatal(err)
				}
				// grpc-timeout is relative: the app's deadline is the
				// client's, give or take the time on the way.
				want, _ := ctx.Deadline()
				got := e.app.waitEnded(t, "ok/deadline").deadline
				if got.IsZero() || got.Before(want.Add(-guard)) || got.After(want.Add(guard)) {
					t.Errorf("app's deadline %v, want about the client's %v", got, want)
				}
			})

			t.Run("deadline expires", func(t *testing.T) {
				ctx, cancel := context.WithTimeout(bg, 500*time.Millisecond)
				defer cancel()
				_, err := e.edge(t, "expires.example.com").Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: "hang/expires"})
				// Client and app give up at the same moment: the client's
				// own timer gives DEADLINE_EXCEEDED; the app's (grpc-go
				// resets the stream) reaches the client first now and
				// then, as aopguard's 502, UNAVAILABLE.
				if code := status.Code(err); code != codes.DeadlineExceeded && code != codes.Unavailable {
					t.Errorf("Check error = %v, want DeadlineExceeded (or Unavailable)", err)
				}
				// Either way the app's handler is let go.
				c := e.app.waitEnded(t, "hang/expires")
				if c.deadline.IsZero() || c.err == nil {
					t.Errorf("app's handler: deadline %v, context error %v; want both", c.deadline, c.err)
				}
			})

			for _, method := range []string{"Check", "Watch"} {
				t.Run("cancel "+method, func(t *testing.T) {
					name := "cancel-" + strings.ToLower(method) + ".example.com"
					client := e.edge(t, name)
					ctx, cancel := context.WithCancel(bg)
					defer cancel()
					service := "hang/" + method
					var err error
					if method == "Check" {
						done := make(chan error, 1)
						go func() {
							_, err := client.Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: service})
							done <- err
						}()
						select {
						case <-e.app.call(service).started:
						case <-time.After(guard):
							t.Fatal("the call did not reach the app")
						}
						cancel()
						err = <-done
					} else {
						service = "hold/" + method
						stream, serr := client.Watch(ctx, &grpc_health_v1.HealthCheckRequest{Service: service})
						if serr != nil {
							t.Fatal(serr)
						}
						if _, serr := stream.Recv(); serr != nil {
							t.Fatal(serr)
						}
						cancel()
						_, err = stream.Recv()
					}
					if st := status.Convert(err); st.Code() != codes.Canceled {
						t.Errorf("client error = %v, want Canceled", err)
					}
					// The client's RST_STREAM reached the app as a cancelled
					// context (the app's handler waits for nothing else).
					if c := e.app.waitEnded(t, service); !errors.Is(c.err, context.Canceled) {
						t.Errorf("app's context ended with %v, want context.Canceled", c.err)
					}
					e.accessLine(t, name, method)
				})
			}

			t.Run("forged verification metadata", func(t *testing.T) {
				// log-only host, no certificate: the app must see NONE,
				// whatever the client claims, in any spelling.
				client := e.h.grpcClient(t, clientOpts{sni: "open.example.com"}, "open.example.com")
				ctx := metadata.AppendToOutgoingContext(bg,
					"x-client-verify", "SUCCESS", "x_client_verify", "SUCCESS",
					"x-client-cert-fingerprint", "forged", "x_client_cert_fingerprint", "forged")
				if _, err := client.Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: "ok/forged"}); err != nil {
					t.Fatal(err)
				}
				wantAppSaw(t, e.app.waitEnded(t, "ok/forged"), "open.example.com", "NONE", "")
				wantAccess(t, e.accessLine(t, "open.example.com", "Check"), 200, "none")
			})

			t.Run("host recheck", func(t *testing.T) {
				// Verified for a.example.com, asking for a zone host: the
				// zone does not accept CA A, so nothing is forwarded.
				client := e.h.grpcClient(t, clientOpts{sni: "a.example.com", cert: e.pki.clientA}, "a.example.com")
				_, err := client.Check(bg, &grpc_health_v1.HealthCheckRequest{Service: "ok/recheck"}, grpc.CallAuthority("other.example.com"))
				// grpc-go reports an HTTP status it has no mapping for (421)
				// as UNKNOWN, with the status in the message.
				if st := status.Convert(err); st.Code() != codes.Unknown || !strings.Contains(st.Message(), "421") {
					t.Errorf("Check error = %v, want UNKNOWN for the proxy's 421", err)
				}
				m := e.accessLine(t, "other.example.com", "Check")
				if m["status"] != float64(http.StatusMisdirectedRequest) || m["policy"] != tlsconfig.ZoneName {
					t.Errorf("access line %v, want 421 under the zone policy", m)
				}
				if e.app.reached("ok/recheck") {
					t.Error("the app received a call the request's policy refuses")
				}
			})

			t.Run("no certificate under require", func(t *testing.T) {
				client := e.h.grpcClient(t, clientOpts{sni: "nocert.example.com"}, "nocert.example.com")
				_, err := client.Check(bg, &grpc_health_v1.HealthCheckRequest{Service: "ok/nocert"})
				if status.Code(err) != codes.Unavailable {
					t.Errorf("Check error = %v, want Unavailable (handshake refused)", err)
				}
				if e.app.reached("ok/nocert") {
					t.Error("the app received a call whose handshake was refused")
				}
			})

			t.Run("concurrent calls", func(t *testing.T) {
				client := e.edge(t, "many.example.com")
				var wg sync.WaitGroup
				errs := make(chan error, 64)
				for i := range 64 {
					wg.Go(func() {
						_, err := client.Check(bg, &grpc_health_v1.HealthCheckRequest{Service: fmt.Sprintf("ok/many-%d", i)})
						errs <- err
					})
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					if err != nil {
						t.Error(err)
					}
				}
			})
		})
	}
}

// TestGRPCUpstreamFailures: an HTTP/2 upstream that is down, slow, or not
// HTTP/2 gets the gRPC client UNAVAILABLE (502/504), with the cause in the
// access line and metrics.
func TestGRPCUpstreamFailures(t *testing.T) {
	pki := newPKI(t)
	h1TLS := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	h1TLS.TLS = &tls.Config{Certificates: []tls.Certificate{pki.server.TLS()}}
	h1TLS.StartTLS() // ALPN http/1.1 only: refuses a client offering only h2
	t.Cleanup(h1TLS.Close)
	noALPN := newNoALPNApp(t, pki)
	plain := newUpstream(t, "plain", nil) // HTTP/1.1 in cleartext
	closed := strings.Replace(closedURL(t), "http://", "h2c://", 1)
	otherCA := newPKI(t)
	slow := newGRPCApp(t, pki, "h2c")

	tests := []struct {
		name     string
		upstream func(t *testing.T) string
		roots    *testPKI
		timeout  time.Duration
		status   int
		kind     string // upstream_error counter
		cause    string // in the access line's upstream_error
	}{
		{name: "h2c down", upstream: func(*testing.T) string { return closed }, status: 502, kind: "unavailable", cause: "connection refused"},
		{name: "h2c to an HTTP/1.1 app", upstream: func(*testing.T) string { return "h2c://" + strings.TrimPrefix(plain.url, "http://") }, status: 502, kind: "unavailable"},
		{name: "h2 to an HTTP/1.1 app", upstream: func(*testing.T) string { return "h2://" + strings.TrimPrefix(h1TLS.URL, "https://") }, status: 502, kind: "unavailable", cause: "no application protocol"},
		{name: "h2 to an app without ALPN", upstream: func(*testing.T) string { return "h2://" + noALPN }, status: 502, kind: "unavailable", cause: "did not negotiate HTTP/2"},
		{name: "h2 untrusted certificate", upstream: func(t *testing.T) string { return newGRPCApp(t, pki, "h2").url }, roots: otherCA, status: 502, kind: "unavailable", cause: "certificate"},
		{name: "h2c too slow", upstream: func(*testing.T) string { return slow.url }, timeout: 300 * time.Millisecond, status: 504, kind: "timeout", cause: "timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			roots := pki
			if tt.roots != nil {
				roots = tt.roots
			}
			h := newHarness(t, pki, harnessConfig{
				zone:          tlsconfig.PolicySpec{Mode: tlsconfig.Require, CAs: cas(pki.zoneCA), Upstream: tt.upstream(t)},
				timeout:       tt.timeout,
				upstreamRoots: testpki.Pool(roots.serverCA),
			})
			client := h.grpcClient(t, clientOpts{sni: "app.example.com", cert: pki.clientZone}, "app.example.com")
			_, err := client.Check(context.Background(), &grpc_health_v1.HealthCheckRequest{Service: "hang/x"})
			if status.Code(err) != codes.Unavailable {
				t.Errorf("Check error = %v, want Unavailable", err)
			}
			m := h.log.access(t, "/grpc.health.v1.Health/Check")
			cause, _ := m["upstream_error"].(string)
			if m["status"] != float64(tt.status) || cause == "" || !strings.Contains(cause, tt.cause) {
				t.Errorf("access line %v, want status %d and an upstream_error with %q", m, tt.status, tt.cause)
			}
			if n := h.requests.get("upstream_error", tlsconfig.ZoneName, tt.kind); n != 1 {
				t.Errorf("upstream_error %s counted %d, want 1", tt.kind, n)
			}
			if tt.status == http.StatusGatewayTimeout {
				// Given up on, the request does not hold the app either.
				if c := slow.waitEnded(t, "hang/x"); !errors.Is(c.err, context.Canceled) {
					t.Errorf("app's context ended with %v, want context.Canceled", c.err)
				}
			}
		})
	}
}

// TestH2UpstreamHTTP: plain HTTP requests, from HTTP/1.1 and HTTP/2
// clients, reach an HTTP/2 app (net/http's server) with the verdict and
// their bodies; the app's trailers reach the client. A client's request
// trailers are not passed on (httputil.ReverseProxy drops their values;
// gRPC sends none), so a forged verification header cannot ride in one.
func TestH2UpstreamHTTP(t *testing.T) {
	pki := newPKI(t)
	for _, scheme := range []string{"h2c", "h2"} {
		app := newH2App(t, pki, scheme, func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/hints") {
				w.Header().Set("Link", "</a.css>; rel=preload")
				w.WriteHeader(http.StatusEarlyHints)
				w.Header().Del("Link")
				io.WriteString(w, "hinted")
				return
			}
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			w.Header().Set("Trailer", "X-Sum")
			w.Header().Set("X-App-Proto", r.Proto)
			var trailers []string
			for k, vv := range r.Trailer {
				for _, v := range vv {
					trailers = append(trailers, k+": "+v)
				}
			}
			fmt.Fprintf(w, "%s %d %q", r.Method, len(body), trailers)
			w.Header().Set("X-Sum", "42")
		})
		h := newHarness(t, pki, harnessConfig{
			zone:          tlsconfig.PolicySpec{Mode: tlsconfig.Require, CAs: cas(pki.zoneCA), Upstream: app.url},
			upstreamRoots: testpki.Pool(pki.serverCA),
		})
		for _, clientH2 := range []bool{false, true} {
			name := fmt.Sprintf("%s upstream, HTTP/%d client", scheme, map[bool]int{false: 1, true: 2}[clientH2])
			t.Run(name, func(t *testing.T) {
				c, _ := h.client(t, clientOpts{sni: "app.example.com", cert: pki.clientZone, h2: clientH2})
				path := fmt.Sprintf("/echo/%s/%v", scheme, clientH2)
				pr, pw := io.Pipe()
				go func() {
					pw.Write([]byte(strings.Repeat("x", 100<<10)))
					pw.Close()
				}()
				req, err := http.NewRequest("POST", "https://app.example.com"+path, pr)
				if err != nil {
					t.Fatal(err)
				}
				req.Trailer = http.Header{"X-Client-Cert-Fingerprint": {"forged"}}
				res, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil {
					t.Fatal(err)
				}
				if want := fmt.Sprintf("POST %d []", 100<<10); res.StatusCode != 200 || string(body) != want {
					t.Errorf("answer %d %q, want 200 %q", res.StatusCode, body, want)
				}
				if got := res.Header.Get("X-App-Proto"); got != "HTTP/2.0" {
					t.Errorf("the app saw %s, want HTTP/2.0", got)
				}
				if got := res.Trailer.Get("X-Sum"); got != "42" {
					t.Errorf("response trailer X-Sum = %q, want 42", got)
				}
				s := app.one(t, path)
				if s.Host != "app.example.com" {
					t.Errorf("the app saw Host %q", s.Host)
				}
				wantVerifyHeaders(t, s.Header, "SUCCESS", fingerprint(pki.clientZone))
				h.log.access(t, path)

				// 1xx responses pass through (103 Early Hints).
				var hints []string
				trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
					hints = append(hints, fmt.Sprintf("%d %s", code, h.Get("Link")))
					return nil
				}}
				req, err = http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "https://app.example.com/hints"+path, nil)
				if err != nil {
					t.Fatal(err)
				}
				res, err = c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ = io.ReadAll(res.Body)
				res.Body.Close()
				if want := []string{"103 </a.css>; rel=preload"}; res.StatusCode != 200 || string(body) != "hinted" || !slices.Equal(hints, want) {
					t.Errorf("answer %d %q after %q, want 200 \"hinted\" after %q", res.StatusCode, body, hints, want)
				}
			})
		}
		t.Run(scheme+" upstream, WebSocket upgrade", func(t *testing.T) {
			// HTTP/2 has no Upgrade: the request is refused, not
			// forwarded without its upgrade.
			c, _ := h.client(t, clientOpts{sni: "app.example.com", cert: pki.clientZone})
			path := "/ws/" + scheme
			res := get(t, c, "GET", "https://app.example.com"+path, "", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}})
			if res.status != http.StatusBadGateway {
				t.Errorf("status %d, want 502", res.status)
			}
			if n := len(app.got(path)); n != 0 {
				t.Errorf("the app received the upgrade request %d times", n)
			}
		})
	}
}

// newH2App serves h on 127.0.0.1 with net/http's server, speaking HTTP/2
// only: with prior knowledge in cleartext for "h2c", over TLS for "h2".
// connState, if given, is the server's ConnState hook.
func newH2App(t *testing.T, pki *testPKI, scheme string, h http.HandlerFunc, connState ...func(net.Conn, http.ConnState)) *upstream {
	t.Helper()
	u := &upstream{name: scheme}
	u.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.reqs = append(u.reqs, seen{Host: r.Host, Path: r.URL.Path, Header: r.Header.Clone()})
		u.mu.Unlock()
		h(w, r)
	}))
	if len(connState) > 0 {
		u.srv.Config.ConnState = connState[0]
	}
	var protos http.Protocols
	if scheme == "h2c" {
		protos.SetUnencryptedHTTP2(true)
		u.srv.Config.Protocols = &protos
		u.srv.Start()
	} else {
		protos.SetHTTP2(true)
		u.srv.Config.Protocols = &protos
		u.srv.EnableHTTP2 = true
		u.srv.TLS = &tls.Config{Certificates: []tls.Certificate{pki.server.TLS()}}
		u.srv.StartTLS()
	}
	t.Cleanup(u.srv.Close)
	pu, err := url.Parse(u.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	u.url = scheme + "://" + pu.Host
	return u
}

// TestH2TransportStreamBound: past its bound of requests in flight, a
// request waits for a slot within upstream_timeout, then fails as a
// timeout (504) without reaching the app; a slot comes back when a
// response body is closed.
func TestH2TransportStreamBound(t *testing.T) {
	pki := newPKI(t)
	release := make(chan struct{})
	app := newH2App(t, pki, "h2c", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		http.NewResponseController(w).Flush()
		if r.URL.Path == "/hold" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
	})
	target, _ := url.Parse(app.url)
	tr := newH2Transport(target, nil, 300*time.Millisecond)
	t.Cleanup(tr.close)
	tr.streams = make(chan struct{}, 1)
	req := func(path string) *http.Request {
		r, err := http.NewRequest("GET", "http://"+target.Host+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	first, err := tr.RoundTrip(req("/hold"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.RoundTrip(req("/second")); !errors.Is(err, errH2Timeout) {
		t.Errorf("second request in flight: error %v, want %v", err, errH2Timeout)
	}
	if n := len(app.got("/second")); n != 0 {
		t.Errorf("the app received the request that found no slot (%d times)", n)
	}
	close(release)
	first.Body.Close()
	third, err := tr.RoundTrip(req("/third"))
	if err != nil {
		t.Fatalf("after the first body was closed: %v", err)
	}
	third.Body.Close()
}

// newNoALPNApp serves HTTP/1.1 over TLS without ALPN at all (as servers
// that predate it do) and returns its address.
func newNoALPNApp(t *testing.T, pki *testPKI) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pki.server.TLS()}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// BenchmarkGRPCUnary: one unary call at a time from a real gRPC client,
// straight to the app (cleartext, and TLS without client certificate) and
// through aopguard wired as in production (mTLS in front, h2c:// behind).
// The app and the client run in this process: compare the three, not
// absolute figures.
func BenchmarkGRPCUnary(b *testing.B) {
	pki := newPKI(b)
	req := &grpc_health_v1.HealthCheckRequest{Service: "bench"}
	for _, mode := range []string{"direct h2c", "direct TLS", "aopguard to h2c"} {
		b.Run(mode, func(b *testing.B) {
			var client grpc_health_v1.HealthClient
			switch mode {
			case "direct h2c", "direct TLS":
				scheme, creds := "h2c", insecure.NewCredentials()
				if mode == "direct TLS" {
					scheme = "h2"
					creds = credentials.NewTLS(&tls.Config{ServerName: "127.0.0.1", RootCAs: testpki.Pool(pki.serverCA)})
				}
				app := newGRPCApp(b, pki, scheme)
				u, _ := url.Parse(app.url)
				cc, err := grpc.NewClient("passthrough:///"+u.Host, grpc.WithTransportCredentials(creds))
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { cc.Close() })
				client = grpc_health_v1.NewHealthClient(cc)
			default:
				bp := newBenchProxy(b, newGRPCApp(b, pki, "h2c").url, true)
				tc := bp.clientTLS()
				tc.NextProtos = nil // gRPC's credentials offer h2
				cc, err := grpc.NewClient("passthrough:///"+bp.addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { cc.Close() })
				client = grpc_health_v1.NewHealthClient(cc)
			}
			ctx := context.Background()
			for b.Loop() {
				if _, err := client.Check(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestH2UpstreamPrune: an HTTP/2 upstream that a reload removed has its
// idle connection closed; one still configured keeps it.
func TestH2UpstreamPrune(t *testing.T) {
	pki := newPKI(t)
	closed := make(chan struct{}, 1)
	app := newH2App(t, pki, "h2c", func(w http.ResponseWriter, r *http.Request) {}, func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			select {
			case closed <- struct{}{}:
			default:
			}
		}
	})
	other := newUpstream(t, "other", nil)
	ups := NewUpstreams(discardLogger(), nil)
	tickets, err := tlsconfig.NewTicketKeys()
	if err != nil {
		t.Fatal(err)
	}
	routes := func(upstream string) *Routes {
		serverCert := pki.server.TLS()
		set, err := tlsconfig.NewSet(tlsconfig.PolicySpec{Mode: tlsconfig.Off, Upstream: upstream}, nil, tlsconfig.Options{
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &serverCert, nil },
			Tickets:        tickets,
		})
		if err != nil {
			t.Fatal(err)
		}
		rt, err := ups.Routes(set, guard)
		if err != nil {
			t.Fatal(err)
		}
		return rt
	}
	rt := routes(app.url)
	tr := rt.backends[0].rp.Transport
	res, err := tr.RoundTrip(httptest.NewRequest("GET", h2Target(mustParse(t, app.url)).String()+"/", nil).WithContext(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()

	ups.Prune(routes(app.url)) // reloaded, same upstream: kept
	if again := routes(app.url).backends[0].rp.Transport; again != tr {
		t.Error("a reload with the same upstream made a new transport")
	}
	select {
	case <-closed:
		t.Fatal("a reload that kept the upstream closed its connection")
	default:
	}
	ups.Prune(routes(other.url)) // the upstream left the configuration
	select {
	case <-closed:
	case <-time.After(guard):
		t.Fatal("the removed upstream's idle connection was not closed")
	}
}

func mustParse(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestH2UpstreamSlowUpload: upstream_timeout bounds the wait for the app's
// answer once the request is sent, not the upload itself: a client
// streaming its body for longer than upstream_timeout (a gRPC
// client-streaming call, say) is answered.
func TestH2UpstreamSlowUpload(t *testing.T) {
	pki := newPKI(t)
	app := newH2App(t, pki, "h2c", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d %v", n, err)
	})
	const timeout = 200 * time.Millisecond
	h := newHarness(t, pki, harnessConfig{
		zone:    tlsconfig.PolicySpec{Mode: tlsconfig.Require, CAs: cas(pki.zoneCA), Upstream: app.url},
		timeout: timeout,
	})
	c, _ := h.client(t, clientOpts{sni: "app.example.com", cert: pki.clientZone, h2: true})
	pr, pw := io.Pipe()
	go func() {
		for range 4 {
			time.Sleep(timeout)
			pw.Write([]byte("piece"))
		}
		pw.Close()
	}()
	req, err := http.NewRequest("POST", "https://app.example.com/upload", pr)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(body) != "20 <nil>" {
		t.Errorf("answer %d %q, want 200 \"20 <nil>\"", res.StatusCode, body)
	}
}

// TestH2UpstreamFullDuplex: over HTTP/2 on both sides, the app can answer
// while the client is still sending, message by message (what gRPC's
// bidirectional streams need).
func TestH2UpstreamFullDuplex(t *testing.T) {
	pki := newPKI(t)
	app := newH2App(t, pki, "h2c", func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		w.WriteHeader(200)
		rc.Flush()
		br := bufio.NewReader(r.Body)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			io.WriteString(w, "echo "+line)
			rc.Flush()
		}
	})
	h := newHarness(t, pki, harnessConfig{zone: tlsconfig.PolicySpec{Mode: tlsconfig.Require, CAs: cas(pki.zoneCA), Upstream: app.url}})
	c, _ := h.client(t, clientOpts{sni: "app.example.com", cert: pki.clientZone, h2: true})
	pr, pw := io.Pipe()
	defer pw.Close()
	req, err := http.NewRequest("POST", "https://app.example.com/duplex", pr)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		res *http.Response
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := c.Do(req)
		done <- result{res, err}
	}()
	// The first message goes before the response head can exist.
	io.WriteString(pw, "one\n")
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.res.Body.Close()
	br := bufio.NewReader(r.res.Body)
	for _, msg := range []string{"one", "two", "three"} {
		if msg != "one" {
			io.WriteString(pw, msg+"\n")
		}
		// Each answer arrives while the request is still open.
		if got, err := br.ReadString('\n'); err != nil || got != "echo "+msg+"\n" {
			t.Fatalf("read %q, %v; want the echo of %q", got, err, msg)
		}
	}
}

// TestH2TransportSettings reads, with a raw HTTP/2 framer standing in for
// the app, the SETTINGS aopguard opens an h2c connection with: the stream
// window and header list bounds are the ones configured.
func TestH2TransportSettings(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tr := newH2Transport(&url.URL{Scheme: "h2c", Host: ln.Addr().String()}, nil, guard)
	defer tr.close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+ln.Addr().String()+"/", nil)
		if res, err := tr.RoundTrip(req); err == nil {
			res.Body.Close()
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(guard))
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c, preface); err != nil || string(preface) != http2.ClientPreface {
		t.Fatalf("read %q, %v; want the HTTP/2 client preface (prior knowledge)", preface, err)
	}
	f, err := http2.NewFramer(c, c).ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("first frame %v, want SETTINGS", f)
	}
	if got, ok := sf.Value(http2.SettingInitialWindowSize); !ok || got != h2StreamWindow {
		t.Errorf("SETTINGS INITIAL_WINDOW_SIZE = %d (sent: %v), want %d", got, ok, h2StreamWindow)
	}
	if got, ok := sf.Value(http2.SettingMaxHeaderListSize); !ok || got < h2MaxHeaderBytes || got > 2*h2MaxHeaderBytes {
		t.Errorf("SETTINGS MAX_HEADER_LIST_SIZE = %d (sent: %v), want about %d", got, ok, h2MaxHeaderBytes)
	}
}
