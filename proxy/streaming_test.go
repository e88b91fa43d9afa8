package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/aopguard/aopguard/tlsconfig"
)

// streamEnv: the zone (log-only) forwards to an upstream serving /sse,
// /chunked and /ws (a WebSocket-style upgrade that echoes).
type streamEnv struct {
	pki *testPKI
	h   *harness
	up  *upstream
	// gate[path] is closed by the test once it has read the first part of
	// the response; the upstream does not finish before.
	mu   sync.Mutex
	gate map[string]chan struct{}
}

func (e *streamEnv) gateFor(path string) chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	g, ok := e.gate[path]
	if !ok {
		g = make(chan struct{})
		e.gate[path] = g
	}
	return g
}

func newStreamEnv(t *testing.T) *streamEnv {
	t.Helper()
	e := &streamEnv{pki: newPKI(t), gate: map[string]chan struct{}{}}
	e.up = newUpstream(t, "stream", func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		wait := func() bool {
			select {
			case <-e.gateFor(r.URL.Path):
				return true
			case <-r.Context().Done():
				return false
			}
		}
		switch {
		case strings.HasPrefix(r.URL.Path, "/sse"):
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "event: first\ndata: one\n\n")
			rc.Flush()
			if !wait() {
				return
			}
			io.WriteString(w, "event: second\ndata: two\n\n")
		case strings.HasPrefix(r.URL.Path, "/chunked"):
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "part one\n")
			rc.Flush()
			if !wait() {
				return
			}
			io.WriteString(w, "part two\n")
			rc.Flush()
			io.WriteString(w, "part three\n")
		case strings.HasPrefix(r.URL.Path, "/ws"):
			if !hasToken(r.Header["Connection"], "upgrade") || !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
				http.Error(w, "not an upgrade", http.StatusBadRequest)
				return
			}
			conn, brw, err := rc.Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
			if brw.Flush() != nil {
				return
			}
			io.Copy(conn, brw) // echo until the proxy closes
		default:
			http.NotFound(w, r)
		}
	})
	e.h = newHarness(t, e.pki, harnessConfig{
		zone: tlsconfig.PolicySpec{Mode: tlsconfig.LogOnly, CAs: cas(e.pki.zoneCA), Upstream: e.up.url},
	})
	return e
}

func hasToken(values []string, token string) bool {
	for _, v := range values {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), token) {
				return true
			}
		}
	}
	return false
}

// readUntilBlank reads lines up to and including an empty one.
func readUntilBlank(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			t.Fatalf("after %q: %v", b.String(), err)
		}
		if line == "\n" {
			return b.String()
		}
	}
}

func TestStreaming(t *testing.T) {
	e := newStreamEnv(t)
	for _, proto := range protocols {
		t.Run(proto.name+"/SSE", func(t *testing.T) {
			path := "/sse/" + proto.name
			c, _ := e.h.client(t, clientOpts{sni: "www.example.org", cert: e.pki.clientZone, h2: proto.h2})
			// The deadline turns a buffering proxy into a failure rather
			// than a hang; it is not asserted against.
			ctx, cancel := context.WithTimeout(context.Background(), guard)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", "https://www.example.org"+path, nil)
			req.Header.Set("Accept", "text/event-stream")
			res, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if ct := res.Header.Get("Content-Type"); res.StatusCode != 200 || ct != "text/event-stream" {
				t.Fatalf("got %d %q, want 200 text/event-stream", res.StatusCode, ct)
			}
			br := bufio.NewReader(res.Body)
			// The upstream has not finished: it waits for this read.
			if got := readUntilBlank(t, br); got != "event: first\ndata: one\n\n" {
				t.Fatalf("first event %q", got)
			}
			close(e.gateFor(path))
			if got := readUntilBlank(t, br); got != "event: second\ndata: two\n\n" {
				t.Fatalf("second event %q", got)
			}
			if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
				t.Fatalf("after the events: %q, %v", rest, err)
			}
		})

		t.Run(proto.name+"/chunked", func(t *testing.T) {
			path := "/chunked/" + proto.name
			c, _ := e.h.client(t, clientOpts{sni: "www.example.org", cert: e.pki.clientZone, h2: proto.h2})
			ctx, cancel := context.WithTimeout(context.Background(), guard)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", "https://www.example.org"+path, nil)
			res, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if res.StatusCode != 200 || res.ContentLength != -1 {
				t.Fatalf("got %d with length %d, want 200 of unknown length", res.StatusCode, res.ContentLength)
			}
			if !proto.h2 && !slices.Equal(res.TransferEncoding, []string{"chunked"}) {
				t.Errorf("Transfer-Encoding %q, want chunked", res.TransferEncoding)
			}
			br := bufio.NewReader(res.Body)
			if line, err := br.ReadString('\n'); line != "part one\n" {
				t.Fatalf("first chunk %q, %v", line, err)
			}
			close(e.gateFor(path))
			rest, err := io.ReadAll(br)
			if err != nil || string(rest) != "part two\npart three\n" {
				t.Fatalf("rest %q, %v", rest, err)
			}
		})
	}

	t.Run("WebSocket upgrade", func(t *testing.T) {
		c := e.h.dial(t, clientOpts{sni: "www.example.org", cert: e.pki.clientZone}, "http/1.1")
		if p := c.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
			t.Fatalf("ALPN %q, want http/1.1", p)
		}
		br := bufio.NewReader(c)
		fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: www.example.org\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Client-Verify: SUCCESS\r\n\r\n")
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != http.StatusSwitchingProtocols || !strings.EqualFold(res.Header.Get("Upgrade"), "websocket") {
			t.Fatalf("got %d Upgrade %q, want 101 websocket", res.StatusCode, res.Header.Get("Upgrade"))
		}
		for _, msg := range []string{"hello", "\x81\x05world"} {
			if _, err := io.WriteString(c, msg); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, len(msg))
			if _, err := io.ReadFull(br, buf); err != nil {
				t.Fatal(err)
			}
			if string(buf) != msg {
				t.Errorf("echo %q, want %q", buf, msg)
			}
		}
		// The upgrade request was judged like any other.
		s := e.up.one(t, "/ws")
		wantVerifyHeaders(t, s.Header, "SUCCESS", fingerprint(e.pki.clientZone))
	})
}

// TestAccessLogRecordsUpgradeStatus: the recorder is written to note a 101
// for the access line and the 1xx request counter, but ReverseProxy answers
// an upgrade by hijacking, without calling WriteHeader, so the line says 200.
func TestAccessLogRecordsUpgradeStatus(t *testing.T) {
	e := newStreamEnv(t)
	c := e.h.dial(t, clientOpts{sni: "www.example.org", cert: e.pki.clientZone}, "http/1.1")
	br := bufio.NewReader(c)
	fmt.Fprintf(c, "GET /ws-log HTTP/1.1\r\nHost: www.example.org\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", res.StatusCode)
	}
	c.Close() // ends the tunnel; the access line follows
	line := e.h.log.access(t, "/ws-log")
	if line["status"] != float64(http.StatusSwitchingProtocols) {
		t.Errorf("access line status %v, want 101", line["status"])
	}
	if n := e.h.requests.get("_zone", "1xx"); n != 1 {
		t.Errorf("1xx request counter %d, want 1 (counters: %v)", n, e.h.requests.nonzero())
	}
}
