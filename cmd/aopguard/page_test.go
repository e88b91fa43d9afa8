package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/aopguard/aopguard/internal/testpki"
	"github.com/aopguard/aopguard/rollout"
)

// chromium runs Debian's chromium headless with args and returns stdout.
func chromium(t *testing.T, args ...string) string {
	t.Helper()
	bin := tool(t, "chromium", "/usr/bin/chromium")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir()}, args...)...)
	var out, errs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errs
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, errs.String())
	}
	return out.String()
}

// text is the text content of n.
func text(n *html.Node) string {
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return strings.Join(strings.Fields(b.String()), " ")
}

func attr(n *html.Node, name string) string {
	for _, a := range n.Attr {
		if a.Key == name {
			return a.Val
		}
	}
	return ""
}

// find returns every element below n for which match is true.
func find(n *html.Node, match func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && match(n) {
			out = append(out, n)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return out
}

func hasClass(n *html.Node, class string) bool {
	return n.Type == html.ElementNode && strings.Contains(" "+attr(n, "class")+" ", " "+class+" ")
}

// TestRolloutPageInChromium loads GET / from an aopguard that saw mixed
// traffic in headless Chromium and reads the rendered DOM: every host
// with its mode and verdict, the failing source, the expiry timeline.
// With AOPGUARD_PAGE_SCREENSHOT=file.png it also saves a screenshot (how
// docs/rollout-page.png is made).
func TestRolloutPageInChromium(t *testing.T) {
	tool(t, "chromium", "/usr/bin/chromium")
	p := newPKI(t)
	up := newUpstream(t)
	p.write(t, "cf-ips.txt", []byte(cloudflareAddr+"/32\n"))
	// other.example.com is mid-rotation: its old CA expires in 20 days.
	oldCA := testpki.New(t, nil, testpki.Options{CN: "other AOP CA (old)", IsCA: true, NotAfter: time.Now().Add(20*24*time.Hour + time.Hour)})
	p.write(t, "other-ca.pem", testpki.Bundle(oldCA, testpki.CA(t, "other AOP CA (new)")))
	writeConfig(t, p.dir, `
upstream: `+up.URL+`
mode: log-only
zone_ca: zone-ca.pem
cloudflare_ips: cf-ips.txt
ready_min_requests: 3
certificates:
  - cert: server.pem
    key: server.key
hosts:
  - name: app.example.com
    ca: host-ca.pem
  - name: other.example.com
    mode: require
    ca: other-ca.pem
`)
	g := start(t, "--config", p.path("aopguard.yaml"))
	for i := 0; i < 3; i++ {
		if _, err := fromAddr(t, cloudflareAddr, g.listen, p.clientTLS("localhost", p.zoneLeaf), "localhost", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := fromAddr(t, cloudflareAddr, g.listen, p.clientTLS("app.example.com", p.zoneLeaf), "app.example.com", ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := fromAddr(t, scannerAddr, g.listen, p.clientTLS("localhost", nil), "localhost", "zgrab/0.x"); err != nil {
		t.Fatal(err)
	}
	g.waitLog("request", 7)

	url := "http://" + g.admin + "/"
	doc, err := html.Parse(strings.NewReader(chromium(t, "--dump-dom", url)))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct{ mode, verdict string }{
		"_zone":             {"log-only", rollout.ReadyToEnforce},
		"app.example.com":   {"log-only", rollout.NotReady},
		"other.example.com": {"require", rollout.Enforced},
	}
	sections := find(doc, func(n *html.Node) bool { return n.Data == "section" && hasClass(n, "policy") })
	if len(sections) != len(want) {
		t.Fatalf("%d host sections rendered, want %d:\n%s", len(sections), len(want), text(doc))
	}
	for _, s := range sections {
		heading := find(s, func(n *html.Node) bool { return n.Data == "h2" })
		verdict := find(s, func(n *html.Node) bool { return hasClass(n, "verdict") })
		mode := find(s, func(n *html.Node) bool { return hasClass(n, "mode") })
		if len(heading) != 1 || len(verdict) != 1 || len(mode) != 1 {
			t.Fatalf("section without a heading, mode and verdict: %s", text(s))
		}
		name := text(heading[0])
		w, ok := want[name]
		if !ok {
			t.Errorf("unexpected host %q", name)
			continue
		}
		delete(want, name)
		if text(verdict[0]) != w.verdict || text(mode[0]) != w.mode {
			t.Errorf("%s: rendered mode %q verdict %q, want %s %s", name, text(mode[0]), text(verdict[0]), w.mode, w.verdict)
		}
		switch name {
		case "app.example.com":
			if !strings.Contains(text(s), "zone_cert_on_host 3") || !strings.Contains(text(s), cloudflareAddr) {
				t.Errorf("app.example.com: no reason or failing source: %s", text(s))
			}
		case "_zone":
			if !strings.Contains(text(s), scannerAddr) {
				t.Errorf("_zone: the scanner is not listed as a failing source: %s", text(s))
			}
		}
	}
	for name := range want {
		t.Errorf("host %s not rendered", name)
	}
	timeline := find(doc, func(n *html.Node) bool { return n.Data == "table" && hasClass(n, "expiry") })
	if len(timeline) != 1 {
		t.Fatalf("no expiry timeline: %s", text(doc))
	}
	rows := find(timeline[0], func(n *html.Node) bool { return n.Data == "tr" })
	var order []string
	for _, r := range rows[1:] {
		order = append(order, text(r))
	}
	// Soonest first; the one inside 30 days is drawn as a warning.
	if len(order) != 4 || !strings.HasPrefix(order[0], "other AOP CA (old)other.example.com") {
		t.Fatalf("timeline rows %q", order)
	}
	if bars := find(rows[1], func(n *html.Node) bool { return hasClass(n, "bar") }); len(bars) != 1 || !hasClass(bars[0], "warn") {
		t.Errorf("the CA expiring in 20 days is not drawn as a warning")
	}
	if shot := os.Getenv("AOPGUARD_PAGE_SCREENSHOT"); shot != "" {
		chromium(t, "--screenshot="+shot, "--window-size=1280,900", "--hide-scrollbars", url)
	}
}
