package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/aopguard/aopguard/config"
	"github.com/aopguard/aopguard/internal/testpki"
	"github.com/aopguard/aopguard/internal/testtool"
	"github.com/aopguard/aopguard/metrics"
)

// binary is the aopguard binary built once for the integration tests, which
// start it as users do and talk to it over real sockets.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "aopguard-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "aopguard")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building aopguard:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// pki is the test world: a Cloudflare-like zone CA, a customer CA for a
// per-hostname policy, a CA nobody trusts, and the origin's server cert.
type pki struct {
	dir                         string
	zoneCA, hostCA, rogueCA     *testpki.Cert
	serverCA, server            *testpki.Cert
	zoneLeaf, hostLeaf, rogueLf *testpki.Cert
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	p.zoneCA = testpki.CA(t, "origin-pull test CA")
	p.hostCA = testpki.CA(t, "app AOP CA")
	p.rogueCA = testpki.CA(t, "rogue CA")
	p.serverCA = testpki.CA(t, "origin server CA")
	p.server = testpki.Server(t, p.serverCA, "app.example.com", "other.example.com", "localhost", "127.0.0.1")
	p.zoneLeaf = testpki.Client(t, p.zoneCA, "cloudflare zone client")
	p.hostLeaf = testpki.Client(t, p.hostCA, "app.example.com")
	p.rogueLf = testpki.Client(t, p.rogueCA, "scanner")
	for name, c := range map[string]*testpki.Cert{"zone-ca": p.zoneCA, "host-ca": p.hostCA, "server-ca": p.serverCA} {
		p.write(t, name+".pem", c.CertPEM())
	}
	p.write(t, "server.pem", p.server.CertPEM())
	p.write(t, "server.key", p.server.KeyPEM())
	for name, c := range map[string]*testpki.Cert{"zone-client": p.zoneLeaf, "host-client": p.hostLeaf, "rogue-client": p.rogueLf} {
		p.write(t, name+".pem", c.CertPEM())
		p.write(t, name+".key", c.KeyPEM())
	}
	return p
}

func (p *pki) write(t *testing.T, name string, data []byte) string {
	t.Helper()
	return testpki.WriteFile(t, p.dir, name, data)
}

func (p *pki) path(name string) string { return filepath.Join(p.dir, name) }

// clientTLS returns a client config trusting the origin's server CA and
// presenting leaf (nil: no certificate).
func (p *pki) clientTLS(serverName string, leaf *testpki.Cert) *tls.Config {
	cfg := &tls.Config{RootCAs: testpki.Pool(p.serverCA), ServerName: serverName}
	if leaf != nil {
		// Present the certificate whatever CAs the server advertises, as
		// curl and Cloudflare do (crypto/tls would otherwise withhold a
		// certificate the server does not list).
		c := leaf.TLS()
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	return cfg
}

// upstream is the app behind aopguard: it echoes what it was sent.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen []http.Header
	hold chan struct{} // when not nil, /slow waits for it
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		h := r.Header.Clone()
		h.Set("Host", r.Host)
		u.seen = append(u.seen, h)
		hold := u.hold
		u.mu.Unlock()
		if r.URL.Path == "/slow" && hold != nil {
			<-hold
		}
		w.Header().Set("X-Upstream-Saw-Client-Verify", r.Header.Get("X-Client-Verify"))
		w.Header().Set("X-Upstream-Saw-Fingerprint", r.Header.Get("X-Client-Cert-Fingerprint"))
		fmt.Fprintf(w, "hello from upstream %s\n", r.Host)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.seen)
}

// proc is a running aopguard.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	listen string
	admin  string
	mu     sync.Mutex
	lines  []map[string]any
	raw    bytes.Buffer
	exited chan struct{}
	code   int
}

// start runs "aopguard run args..." and waits until it serves.
func start(t *testing.T, args ...string) *proc {
	t.Helper()
	p := launch(t, args...)
	deadline := time.After(20 * time.Second)
	for {
		if l := p.find("aopguard serving"); l != nil {
			p.listen, p.admin = l["listen"].(string), l["admin"].(string)
			return p
		}
		select {
		case <-p.exited:
			t.Fatalf("aopguard exited with %d before serving:\n%s", p.code, p.output())
		case <-deadline:
			t.Fatalf("aopguard did not start:\n%s", p.output())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// launch starts the binary without waiting for it to serve.
func launch(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, exited: make(chan struct{})}
	p.cmd = exec.Command(binary, append([]string{"run", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"}, args...)...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			p.mu.Lock()
			p.raw.Write(sc.Bytes())
			p.raw.WriteByte('\n')
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				p.lines = append(p.lines, m)
			}
			p.mu.Unlock()
		}
		err := p.cmd.Wait()
		p.code = 0
		if ee, ok := err.(*exec.ExitError); ok {
			p.code = ee.ExitCode()
		}
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("aopguard output:\n%s", p.output())
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.raw.String()
}

// find returns the first log line with the given message.
func (p *proc) find(msg string) map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.lines {
		if l["message"] == msg {
			return l
		}
	}
	return nil
}

// all returns every log line with the given message.
func (p *proc) all(msg string) []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []map[string]any
	for _, l := range p.lines {
		if l["message"] == msg {
			out = append(out, l)
		}
	}
	return out
}

// waitLog waits until n lines with msg have been logged.
func (p *proc) waitLog(msg string, n int) []map[string]any {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if ls := p.all(msg); len(ls) >= n {
			return ls
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.t.Fatalf("no %d× %q in the log:\n%s", n, msg, p.output())
	return nil
}

func (p *proc) signal(s syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(s); err != nil {
		p.t.Fatal(err)
	}
}

// reload sends SIGHUP and waits for the outcome; it returns true when the
// reload took effect.
func (p *proc) reload() bool {
	p.t.Helper()
	ok, failed := len(p.all("reload complete")), len(p.all("reload failed; still serving the previous configuration"))
	p.signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if len(p.all("reload complete")) > ok {
			return true
		}
		if len(p.all("reload failed; still serving the previous configuration")) > failed {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.t.Fatalf("no reload outcome logged:\n%s", p.output())
	return false
}

func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.code
	case <-time.After(30 * time.Second):
		p.t.Fatalf("aopguard did not exit:\n%s", p.output())
	}
	return -1
}

// metrics fetches /metrics and returns the lines that start with prefix.
func (p *proc) metrics(prefix string) []string {
	p.t.Helper()
	resp, err := http.Get("http://" + p.admin + "/metrics")
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out []string
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

// metric returns the value of one exact series ("" when absent).
func (p *proc) metric(series string) string {
	for _, l := range p.metrics(series) {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			return v
		}
	}
	return ""
}

// get makes one request over a new connection.
func get(t *testing.T, addr string, cfg *tls.Config, host, path string) (*http.Response, string, error) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: cfg, DialContext: (&net.Dialer{}).DialContext, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "https://"+addr+path, nil)
	if host != "" {
		req.Host = host
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body), nil
}

func writeConfig(t *testing.T, dir, body string) string {
	t.Helper()
	return testpki.WriteFile(t, dir, "aopguard.yaml", []byte(body))
}

// tool returns the path of an external program the tests drive (curl,
// openssl, nginx): see testtool.Path.
func tool(t *testing.T, name string, fallback ...string) string {
	t.Helper()
	return testtool.Path(t, name, fallback...)
}

// runCmd runs cmd and returns its exit code and combined output; failing
// to start it fails the test.
func runCmd(t *testing.T, cmd *exec.Cmd) (int, string) {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, out.String()
}

// appFor builds the app for the configuration at cfgPath and applies it,
// as run does at start (the watcher's content hash included), logging to
// logs; the app is closed when the test ends.
func appFor(t *testing.T, cfgPath string, logs io.Writer) (*app, *config.Config) {
	t.Helper()
	a, err := newApp(zerolog.New(logs), metrics.New(), nil, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.close)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	a.lastHash = contentHash(watchedFiles(cfgPath, cfg))
	if err := a.apply(cfg); err != nil {
		t.Fatalf("applying %s: %v", cfgPath, err)
	}
	return a, cfg
}
