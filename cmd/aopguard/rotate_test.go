package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aopguard/aopguard/internal/testpki"
)

// secretVolume mimics how the kubelet updates a Secret volume: files live
// in a timestamped folder, "..data" points at it, and each visible name is
// a symlink through "..data". An update writes a new folder and swaps
// "..data" with one rename, so a watch on the files themselves sees
// nothing.
type secretVolume struct {
	t   *testing.T
	dir string
	gen int
}

func newSecretVolume(t *testing.T, dir string, files map[string][]byte) *secretVolume {
	v := &secretVolume{t: t, dir: dir}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	v.update(files)
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

func (v *secretVolume) update(files map[string][]byte) {
	v.t.Helper()
	v.gen++
	gen := fmt.Sprintf("..2026_11_23_00_00_%02d", v.gen)
	if err := os.Mkdir(filepath.Join(v.dir, gen), 0o755); err != nil {
		v.t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(v.dir, gen, name), data, 0o600); err != nil {
			v.t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(v.dir, "..data"))
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(gen, tmp); err != nil {
		v.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		v.t.Fatal(err)
	}
	if old != "" {
		os.RemoveAll(filepath.Join(v.dir, old))
	}
}

// loop sends requests with one client certificate until stopped, over a
// keep-alive connection or a new (resumable) connection each time, and
// records every failure.
type loop struct {
	name     string
	stop     chan struct{}
	done     chan struct{}
	ok       atomic.Int64
	mu       sync.Mutex
	failures []string
	client   *http.Client
}

func startLoop(t *testing.T, name, addr string, cfg *tls.Config, keepAlive bool) *loop {
	l := &loop{name: name, stop: make(chan struct{}), done: make(chan struct{})}
	tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: !keepAlive, ForceAttemptHTTP2: true}
	l.client = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	go func() {
		defer close(l.done)
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			default:
			}
			req, _ := http.NewRequest("GET", "https://"+addr+fmt.Sprintf("/%s/%d", name, i), nil)
			req.Host = "app.example.com"
			resp, err := l.client.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			if err != nil {
				l.mu.Lock()
				l.failures = append(l.failures, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
				l.mu.Unlock()
				continue
			}
			l.ok.Add(1)
		}
	}()
	t.Cleanup(func() { l.halt() })
	return l
}

func (l *loop) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
}

// check stops the loop and fails the test on any failed request.
func (l *loop) check(t *testing.T) {
	t.Helper()
	l.halt()
	if l.ok.Load() < 5 {
		t.Errorf("%s: only %d requests succeeded", l.name, l.ok.Load())
	}
	if len(l.failures) > 0 {
		t.Errorf("%s: %d failed requests while its certificate was valid, first: %v", l.name, len(l.failures), l.failures[0])
	}
}

// TestRotationUnderLoad rotates a per-hostname CA bundle old → old+new →
// new and swaps the server certificate through Kubernetes-style Secret
// volumes while clients keep sending requests, on keep-alive and on new
// (resumed) connections. No request fails while its certificate is valid,
// no SIGHUP is sent (file watching does it), and afterwards the old
// certificate is refused on new, resumed and kept-alive connections.
func TestRotationUnderLoad(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t)
	newCA := testpki.CA(t, "app AOP CA 2027")
	newLeaf := testpki.Client(t, newCA, "app.example.com 2027")
	newServer := testpki.Server(t, p.serverCA, "app.example.com", "localhost", "127.0.0.1")

	aop := newSecretVolume(t, filepath.Join(p.dir, "aop"), map[string][]byte{"app-ca.pem": p.hostCA.CertPEM()})
	tlsVol := newSecretVolume(t, filepath.Join(p.dir, "tls"), map[string][]byte{"tls.crt": p.server.CertPEM(), "tls.key": p.server.KeyPEM()})
	writeConfig(t, p.dir, `
upstream: `+up.URL+`
mode: require
zone_ca: zone-ca.pem
reload_check_interval: 1h   # only file notifications can trigger the reloads below
certificates:
  - cert: tls/tls.crt
    key: tls/tls.key
hosts:
  - name: app.example.com
    ca: aop/app-ca.pem
`)
	g := start(t, "--config", p.path("aopguard.yaml"))
	reloads := func() int { return len(g.all("reload complete")) }
	waitReload := func(n int) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for reloads() < n {
			if time.Now().After(deadline) {
				t.Fatalf("no automatic reload #%d:\n%s", n, g.output())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	oldSessions := tls.NewLRUClientSessionCache(8)
	oldCfg := func(sessions tls.ClientSessionCache) *tls.Config {
		c := p.clientTLS("app.example.com", p.hostLeaf)
		c.ClientSessionCache = sessions
		return c
	}
	oldKA := startLoop(t, "old-keepalive", g.listen, oldCfg(nil), true)
	oldNew := startLoop(t, "old-newconn", g.listen, oldCfg(oldSessions), false)
	time.Sleep(300 * time.Millisecond)

	aop.update(map[string][]byte{"app-ca.pem": testpki.Bundle(p.hostCA, newCA)})
	waitReload(1)
	newKA := startLoop(t, "new-keepalive", g.listen, p.clientTLS("app.example.com", newLeaf), true)
	newNew := startLoop(t, "new-newconn", g.listen, p.clientTLS("app.example.com", newLeaf), false)
	time.Sleep(300 * time.Millisecond)

	tlsVol.update(map[string][]byte{"tls.crt": newServer.CertPEM(), "tls.key": newServer.KeyPEM()})
	waitReload(2)
	time.Sleep(300 * time.Millisecond)
	oldKA.halt()
	oldNew.check(t)
	if len(oldKA.failures) > 0 {
		t.Errorf("old-keepalive: %d failures while valid, first: %v", len(oldKA.failures), oldKA.failures[0])
	}

	aop.update(map[string][]byte{"app-ca.pem": newCA.CertPEM()})
	waitReload(3)
	time.Sleep(300 * time.Millisecond)
	newKA.check(t)
	newNew.check(t)

	for _, l := range g.all("reloading configuration") {
		if l["trigger"] != "file change" {
			t.Errorf("reload triggered by %v, want file change", l["trigger"])
		}
	}
	// The server certificate was swapped.
	conn, err := tls.Dial("tcp", g.listen, p.clientTLS("app.example.com", newLeaf))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(conn.ConnectionState().PeerCertificates[0].Raw, newServer.Cert.Raw) {
		t.Error("new connections still get the old server certificate")
	}
	conn.Close()
	// The old certificate is refused: on a new connection, on a resumed
	// session issued before the rotation, and on a kept-alive connection.
	for name, cfg := range map[string]*tls.Config{"new connection": oldCfg(nil), "resumed session": oldCfg(oldSessions)} {
		if _, _, err := get(t, g.listen, cfg, "app.example.com", "/"); err == nil {
			t.Errorf("old certificate admitted on a %s after its CA was removed", name)
		}
	}
	req, _ := http.NewRequest("GET", "https://"+g.listen+"/after", nil)
	req.Host = "app.example.com"
	if resp, err := oldKA.client.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusMisdirectedRequest {
			t.Errorf("kept-alive connection with the old certificate: %d, want 421", resp.StatusCode)
		}
	}
	if v := g.metric(`aopguard_config_reloads_total{result="failure"}`); v != "" && v != "0" {
		t.Errorf("%s reloads failed", v)
	}
}

// TestReloadOnlyOnChange drives the in-process reload logic: unchanged
// content does not reload, changed content does, and a broken file is
// tried once and again only when it changes.
func TestReloadOnlyOnChange(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t)
	cfgPath := writeConfig(t, p.dir, "upstream: "+up.URL+"\nzone_ca: zone-ca.pem\n")
	f := &flags{configFile: cfgPath, set: map[string]bool{}}
	var logs bytes.Buffer
	a, _ := appFor(t, cfgPath, &logs)
	steps := []struct {
		name   string
		change func()
		tried  bool
		zoneCA string // subject of the zone CA after the step
	}{
		{"nothing changed", func() {}, false, "origin-pull test CA"},
		{"touched, same bytes", func() { p.write(t, "zone-ca.pem", p.zoneCA.CertPEM()) }, false, "origin-pull test CA"},
		{"new CA", func() { p.write(t, "zone-ca.pem", p.hostCA.CertPEM()) }, true, "app AOP CA"},
		{"half-written CA", func() { p.write(t, "zone-ca.pem", p.zoneCA.CertPEM()[:100]) }, true, "app AOP CA"},
		{"still half-written", func() {}, false, "app AOP CA"},
		{"fixed", func() { p.write(t, "zone-ca.pem", p.zoneCA.CertPEM()) }, true, "origin-pull test CA"},
	}
	for _, s := range steps {
		s.change()
		if tried := a.reloadIfChanged(f, "test"); tried != s.tried {
			t.Errorf("%s: reload tried = %v, want %v", s.name, tried, s.tried)
		}
		if got := a.set().Zone().CAs()[0].Subject.CommonName; got != s.zoneCA {
			t.Errorf("%s: zone CA %q, want %q", s.name, got, s.zoneCA)
		}
	}
}

// readmeCommands returns the shell lines of README.md's indented code
// blocks between the headings (or bold step titles) start and end that
// begin with one of prefixes.
func readmeCommands(t *testing.T, start, end string, prefixes ...string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	i := strings.Index(s, start)
	if i < 0 {
		t.Fatalf("README.md has no %q", start)
	}
	s = s[i:]
	if j := strings.Index(s, end); j >= 0 {
		s = s[:j]
	}
	var out []string
	for _, l := range strings.Split(s, "\n") {
		cmd, ok := strings.CutPrefix(l, "    ")
		if !ok {
			continue
		}
		for _, p := range prefixes {
			if strings.HasPrefix(cmd, p) {
				out = append(out, cmd)
			}
		}
	}
	return out
}

// TestRotationRecipeFromREADME runs the README's own commands, as a user
// would: the walkthrough's set-up (CA, client and origin certificates, the
// trusted bundle in a file of its own), then the new-CA rotation's steps 1
// and 5 against a running aopguard in require mode. Both certificates are
// accepted in between, only the new one after, and at the end each CA
// file still goes with its key: "certs client --ca app-ca" and
// "--ca app-ca-2" both work (the recipe used to overwrite app-ca.pem).
func TestRotationRecipeFromREADME(t *testing.T) {
	dir := t.TempDir()
	sh := func(line string) {
		t.Helper()
		cmd := exec.Command("sh", "-c", line)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(binary)+string(os.PathListSeparator)+os.Getenv("PATH"))
		if code, out := runCmd(t, cmd); code != 0 {
			t.Fatalf("%s: exit %d\n%s", line, code, out)
		}
	}
	setup := readmeCommands(t, "**1. Upload a client certificate to Cloudflare.**", "**3. ",
		"aopguard certs ca ", "aopguard certs client ", "aopguard certs server ", "cp app-ca")
	step1 := readmeCommands(t, "**1. Origin: trust both.**", "**2. Cloudflare: upload", "aopguard certs ", "cat ", "cp ")
	step5 := readmeCommands(t, "**5. Origin: trust only the new CA.**", "**6. Cloudflare", "cp ", "cat ")
	if len(setup) != 4 || len(step1) != 3 || len(step5) != 1 {
		t.Fatalf("README commands changed: set-up %q, step 1 %q, step 5 %q", setup, step1, step5)
	}
	for _, l := range setup {
		sh(l)
	}
	up := newUpstream(t)
	writeConfig(t, dir, "upstream: "+up.URL+"\nreload_check_interval: 1h\ncertificates:\n  - cert: origin.pem\n    key: origin.key\n"+
		"hosts:\n  - name: app.example.com\n    ca: app-ca-bundle.pem\n    mode: require\n")
	g := start(t, "--config", filepath.Join(dir, "aopguard.yaml"))
	admitted := func(client string) bool {
		t.Helper()
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, client+".pem"), filepath.Join(dir, client+".key"))
		if err != nil {
			t.Fatal(err)
		}
		cfg := &tls.Config{ServerName: "app.example.com", InsecureSkipVerify: true, Certificates: []tls.Certificate{pair}}
		resp, _, err := get(t, g.listen, cfg, "app.example.com", "/")
		return err == nil && resp.StatusCode == http.StatusOK
	}
	if !admitted("client") {
		t.Fatal("the walkthrough's client certificate is refused")
	}
	for _, l := range step1 {
		sh(l)
	}
	if !g.reload() {
		t.Fatalf("reload after step 1 failed:\n%s", g.output())
	}
	if !admitted("client") || !admitted("client-2") {
		t.Errorf("after step 1: old admitted %v, new admitted %v; want both", admitted("client"), admitted("client-2"))
	}
	sh(step5[0])
	if !g.reload() {
		t.Fatalf("reload after step 5 failed:\n%s", g.output())
	}
	if admitted("client") || !admitted("client-2") {
		t.Errorf("after step 5: old admitted %v, new admitted %v; want only the new", admitted("client"), admitted("client-2"))
	}
	sh("aopguard certs client --ca app-ca --cn app.example.com --out client-3")
	sh("aopguard certs client --ca app-ca-2 --cn app.example.com --out client-4")
}
