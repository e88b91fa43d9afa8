package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// adminGet fetches path from an admin listener: status code and body.
func adminGet(t *testing.T, admin, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + admin + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestReadyz: /readyz says ready while serving and 503 from the start of a
// drain, while an in-flight request still finishes; /healthz stays 200;
// systemd is told the same over NOTIFY_SOCKET.
func TestReadyz(t *testing.T) {
	// Before the listeners serve, /readyz refuses.
	starting := &app{}
	rec := httptest.NewRecorder()
	starting.serveReadyz(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "starting") {
		t.Errorf("starting: %d %q, want 503 starting", rec.Code, rec.Body.String())
	}

	// systemd (Type=notify) hears the same: READY=1, then STOPPING=1.
	sock := filepath.Join(t.TempDir(), "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	heard := func(want string) {
		t.Helper()
		notify.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 256)
		n, err := notify.Read(buf)
		if err != nil || string(buf[:n]) != want {
			t.Errorf("systemd notification %q %v, want %q", buf[:n], err, want)
		}
	}

	p := newPKI(t)
	up := newUpstream(t)
	up.hold = make(chan struct{})
	g := start(t, "--upstream", up.URL, "--mode", "log-only", "--cert", p.path("server.pem"), "--key", p.path("server.key"))
	if code, body := adminGet(t, g.admin, "/readyz"); code != 200 || body != "ready\n" {
		t.Fatalf("serving: /readyz %d %q, want 200 ready", code, body)
	}
	heard("READY=1")
	done := make(chan error, 1)
	go func() {
		_, _, err := get(t, g.listen, p.clientTLS("localhost", nil), "localhost", "/slow")
		done <- err
	}()
	for up.count() == 0 {
		select {
		case err := <-done:
			t.Fatalf("slow request ended early: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	g.signal(syscall.SIGTERM)
	g.waitLog("shutting down: draining in-flight requests", 1)
	heard("STOPPING=1")
	for _, c := range []struct {
		path, body string
		code       int
	}{
		{"/readyz", "draining", http.StatusServiceUnavailable},
		{"/healthz", "ok", http.StatusOK},
	} {
		if code, body := adminGet(t, g.admin, c.path); code != c.code || !strings.Contains(body, c.body) {
			t.Errorf("draining: %s %d %q, want %d %q", c.path, code, body, c.code, c.body)
		}
	}
	close(up.hold)
	if err := <-done; err != nil {
		t.Errorf("in-flight request: %v", err)
	}
	if code := g.wait(); code != 0 {
		t.Errorf("exit %d", code)
	}
}

// TestReadyzWaitsForACME: serving, but without the certificate of an
// ACME-managed name (the CA cannot be reached), aopguard is not ready.
func TestReadyzWaitsForACME(t *testing.T) {
	p := newPKI(t)
	up := newUpstream(t)
	dead := freeAddr(t)
	writeConfig(t, p.dir, `
upstream: `+up.URL+`
mode: log-only
acme:
  email: ops@example.com
  ca: https://`+dead+`/dir
  names: [app.example.com]
  challenge: tls-alpn-01
  storage: acme-storage
`)
	g := start(t, "--config", p.path("aopguard.yaml"))
	if code, body := adminGet(t, g.admin, "/readyz"); code != http.StatusServiceUnavailable || body != "waiting for ACME certificates: app.example.com\n" {
		t.Errorf("/readyz %d %q, want 503 waiting for app.example.com", code, body)
	}
	if code, _ := adminGet(t, g.admin, "/healthz"); code != 200 {
		t.Errorf("/healthz %d, want 200", code)
	}
}

// TestStatusFindsTheAdminAddress: "aopguard status" asks the admin
// listener named by --admin, by the admin key of --config or of the
// default configuration file; when nothing answers, or the file is bad,
// it says how to point it.
func TestStatusFindsTheAdminAddress(t *testing.T) {
	p := newPKI(t)
	g := start(t, "--upstream", "http://127.0.0.1:1", "--mode", "log-only", "--cert", p.path("server.pem"), "--key", p.path("server.key"))
	_, port, _ := net.SplitHostPort(g.admin)
	dir := t.TempDir()
	// A wildcard admin address (as in a Pod) is asked over loopback.
	good := writeConfig(t, dir, "upstream: http://127.0.0.1:1\nadmin: \":"+port+"\"\n")
	// Nothing listens on a port just released.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	deadDir := t.TempDir()
	deadCfg := writeConfig(t, deadDir, "upstream: http://127.0.0.1:1\nadmin: "+dead+"\n")
	badCfg := writeConfig(t, t.TempDir(), "admin: [\n")

	cases := []struct {
		name        string
		defaultFile string
		args        []string
		code        int
		want        []string // in stdout+stderr
	}{
		{"--config", "", []string{"--config", good}, exitFail, []string{"_zone", "no_traffic"}},
		{"default config file", good, nil, exitFail, []string{"_zone", "no_traffic"}},
		{"--admin wins over the config", deadCfg, []string{"--admin", g.admin}, exitFail, []string{"_zone"}},
		{"nothing answers at the config's address", "", []string{"--config", deadCfg}, exitFail,
			[]string{"no aopguard answers at " + dead, "from the admin key of " + deadCfg, "--config FILE", "--admin ADDR", "--prometheus URL"}},
		{"nothing answers at --admin", filepath.Join(dir, "absent.yaml"), []string{"--admin", dead}, exitFail, []string{"from --admin"}},
		{"bad config file", "", []string{"--config", badCfg}, exitConfig, []string{badCfg, "give --config FILE or --admin ADDR"}},
		{"missing config file", "", []string{"--config", filepath.Join(dir, "nope.yaml")}, exitConfig, []string{"nope.yaml", "--admin ADDR"}},
		{"--prometheus without a scheme", "", []string{"--prometheus", "prometheus:9090"}, exitConfig, []string{"want the http:// or https:// URL"}},
		{"--prometheus where nothing answers", "", []string{"--prometheus", "http://" + dead}, exitFail, []string{"asking Prometheus at http://" + dead}},
		{"--prometheus with --admin", "", []string{"--prometheus", "http://127.0.0.1:1", "--admin", g.admin}, exitConfig, []string{"one or the other"}},
	}
	saved := defaultConfigFile
	t.Cleanup(func() { defaultConfigFile = saved })
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			defaultConfigFile = filepath.Join(dir, "absent.yaml")
			if tc.defaultFile != "" {
				defaultConfigFile = tc.defaultFile
			}
			var out bytes.Buffer
			code := statusCommand(tc.args, &out, &out)
			if code != tc.code {
				t.Errorf("exit %d, want %d:\n%s", code, tc.code, out.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}
