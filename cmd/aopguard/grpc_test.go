package main

import (
	"context"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// TestGRPCThroughBinary runs the real binary configured with an h2c://
// upstream (a gRPC server with the standard health service) for one host,
// and a real gRPC client presenting the edge's certificate: a unary and a
// server-streaming call get through, the app sees the verdict, and each
// call has its access line.
func TestGRPCThroughBinary(t *testing.T) {
	p := newPKI(t)
	var mu sync.Mutex
	var verify []string // X-Client-Verify of each call, as the app saw it
	record := func(ctx context.Context) {
		md, _ := metadata.FromIncomingContext(ctx)
		mu.Lock()
		verify = append(verify, md.Get("x-client-verify")...)
		mu.Unlock()
	}
	app := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			record(ctx)
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			record(ss.Context())
			return h(srv, ss)
		}))
	hs := health.NewServer()
	hs.SetServingStatus("shop", grpc_health_v1.HealthCheckResponse_SERVING)
	grpc_health_v1.RegisterHealthServer(app, hs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go app.Serve(ln)
	t.Cleanup(app.Stop)

	// The zone's upstream is a plain HTTP app; only app.example.com is gRPC.
	web := newUpstream(t)
	g := start(t, "--config", aopguardConfig(t, p, web.URL, "require", "    upstream: h2c://"+ln.Addr().String()+"\n"))

	cc, err := grpc.NewClient("passthrough:///"+g.listen,
		grpc.WithTransportCredentials(credentials.NewTLS(p.clientTLS("app.example.com", p.zoneLeaf))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	client := grpc_health_v1.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	res, err := client.Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: "shop"})
	if err != nil || res.Status != grpc_health_v1.HealthCheckResponse_SERVING {
		t.Fatalf("Check = %v, %v; want SERVING", res, err)
	}
	stream, err := client.Watch(ctx, &grpc_health_v1.HealthCheckRequest{Service: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := stream.Recv(); err != nil || res.Status != grpc_health_v1.HealthCheckResponse_SERVING {
		t.Fatalf("Watch first message = %v, %v; want SERVING", res, err)
	}
	hs.SetServingStatus("shop", grpc_health_v1.HealthCheckResponse_NOT_SERVING)
	if res, err := stream.Recv(); err != nil || res.Status != grpc_health_v1.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch second message = %v, %v; want NOT_SERVING", res, err)
	}
	cancel()
	if _, err := stream.Recv(); err == nil || err == io.EOF {
		t.Errorf("Watch after cancel: %v, want the cancellation", err)
	}

	lines := g.waitLog("request", 2)
	var paths []string
	for _, l := range lines {
		if l["proto"] != "HTTP/2.0" || l["policy"] != "app.example.com" || l["verify"] != "success" {
			t.Errorf("access line %v, want HTTP/2.0 under app.example.com, verified", l)
		}
		paths = append(paths, l["path"].(string))
	}
	slices.Sort(paths)
	if want := []string{"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"}; !slices.Equal(paths, want) {
		t.Errorf("access lines for %q, want %q", paths, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(verify, []string{"SUCCESS", "SUCCESS"}) {
		t.Errorf("the app saw X-Client-Verify %q, want SUCCESS for each call", verify)
	}
	if web.count() != 0 {
		t.Errorf("the zone's HTTP upstream received %d requests meant for the gRPC host", web.count())
	}
}
