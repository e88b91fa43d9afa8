package h1

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

// wrappedConn is a listener's own connection type around a *tls.Conn, as
// aopguard's tlsconfig listener returns: the engine must serve it under
// both protocols and hand it, not the *tls.Conn inside, to every hook.
type wrappedConn struct{ *tls.Conn }

func (c *wrappedConn) TLS() *tls.Conn { return c.Conn }

type wrappingListener struct{ net.Listener }

// lentTLSListener listens on 127.0.0.1 for TLS (h2 and http/1.1) with a
// certificate httptest lends, returning connections of our own type
// (wrappingListener), and the lender, whose client trusts the certificate.
func lentTLSListener(t testing.TB) (net.Listener, *httptest.Server) {
	t.Helper()
	lender := httptest.NewUnstartedServer(nil)
	lender.EnableHTTP2 = true
	lender.StartTLS()
	t.Cleanup(lender.Close)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return wrappingListener{tls.NewListener(raw, &tls.Config{
		Certificates: lender.TLS.Certificates,
		NextProtos:   []string{"h2", "http/1.1"},
	})}, lender
}

func (l wrappingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc := c.(*tls.Conn)
		if tc.Handshake() != nil {
			tc.Close()
			continue
		}
		return &wrappedConn{tc}, nil
	}
}

type seenConnKey struct{}

// TestWrappedTLSConn: over HTTP/1.1 and HTTP/2 a request on a listener's
// own TLS type is served, reports its TLS state, and ConnContext sees the
// connection the listener returned.
func TestWrappedTLSConn(t *testing.T) {
	ln, lender := lentTLSListener(t)
	srv := NewServer(Options{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, wrapped := r.Context().Value(seenConnKey{}).(*wrappedConn)
			if !wrapped || r.TLS == nil {
				w.WriteHeader(http.StatusInternalServerError)
			}
			io.WriteString(w, r.Proto)
		}),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, seenConnKey{}, c)
		},
		ReadHeaderTimeout: guard,
		IdleTimeout:       guard,
	})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	defer func() {
		srv.Close()
		<-done
	}()

	for _, tc := range []struct {
		name  string
		h2    bool
		proto string
	}{
		{"HTTP/1.1", false, "HTTP/1.1"},
		{"HTTP/2", true, "HTTP/2.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := lender.Client().Transport.(*http.Transport).Clone()
			tr.ForceAttemptHTTP2 = tc.h2
			if !tc.h2 {
				tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
				tr.TLSClientConfig.NextProtos = nil
			}
			defer tr.CloseIdleConnections()
			res, err := (&http.Client{Transport: tr}).Get("https://" + ln.Addr().String() + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK || res.Proto != tc.proto || string(body) != tc.proto {
				t.Errorf("got %d %s %q, want 200 %s served with the listener's own conn", res.StatusCode, res.Proto, body, tc.proto)
			}
		})
	}
}
