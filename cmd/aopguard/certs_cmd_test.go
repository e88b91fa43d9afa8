package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aopguard/aopguard/certs"
	"github.com/aopguard/aopguard/internal/testpki"
)

// certsRun runs "aopguard certs args..." in-process, in dir.
func certsRun(t *testing.T, dir string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	if dir != "" {
		t.Chdir(dir)
	}
	var out, errb bytes.Buffer
	code = dispatch(append([]string{"certs"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func readCert(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	cs, err := certs.LoadBundle(file)
	if err != nil || len(cs) != 1 {
		t.Fatalf("%s: %d certificates, %v", file, len(cs), err)
	}
	return cs[0]
}

func fileMode(t *testing.T, file string) os.FileMode {
	t.Helper()
	st, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// TestCertsCAAndClient issues a CA and a client certificate with the
// commands and checks them with crypto/x509 and openssl.
func TestCertsCAAndClient(t *testing.T) {
	openssl := tool(t, "openssl")
	cases := []struct {
		name       string
		caArgs     []string
		clientArgs []string
		wantKey    string
		wantDays   [2]int
	}{
		{"defaults (ECDSA, 10 years, 1 year)", nil, nil, "ECDSA P-256", [2]int{3650, 365}},
		{"RSA, explicit days", []string{"--key-type", "rsa", "--days", "730"}, []string{"--key-type", "rsa", "--rsa-bits", "3072", "--days", "30"}, "RSA", [2]int{730, 30}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			before := time.Now().Add(-time.Second)
			code, out, errOut := certsRun(t, dir, append([]string{"ca", "--cn", "Example AOP CA", "--out", "ca"}, tc.caArgs...)...)
			if code != 0 || !strings.Contains(out, "wrote ca.pem (certificate) and ca.key (private key, mode 0600)") {
				t.Fatalf("certs ca: exit %d\n%s%s", code, out, errOut)
			}
			code, out, errOut = certsRun(t, "", append([]string{"client", "--ca", "ca", "--cn", "app.example.com", "--out", "client"}, tc.clientArgs...)...)
			if code != 0 || !strings.Contains(out, "wrote client.pem") {
				t.Fatalf("certs client: exit %d\n%s%s", code, out, errOut)
			}
			after := time.Now().Add(time.Second)

			ca, leaf := readCert(t, filepath.Join(dir, "ca.pem")), readCert(t, filepath.Join(dir, "client.pem"))
			if !ca.IsCA || !ca.BasicConstraintsValid || ca.KeyUsage&x509.KeyUsageCertSign == 0 || ca.Subject.CommonName != "Example AOP CA" {
				t.Errorf("CA: IsCA %v, key usage %v, CN %q", ca.IsCA, certs.KeyUsageNames(ca.KeyUsage), ca.Subject.CommonName)
			}
			if leaf.IsCA || !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || leaf.Subject.CommonName != "app.example.com" {
				t.Errorf("leaf: IsCA %v, EKU %v, CN %q", leaf.IsCA, certs.ExtKeyUsageNames(leaf.ExtKeyUsage), leaf.Subject.CommonName)
			}
			for i, c := range []*x509.Certificate{ca, leaf} {
				days := time.Duration(tc.wantDays[i]) * 24 * time.Hour
				if c.NotAfter.Before(before.Add(days).Truncate(time.Second)) || c.NotAfter.After(after.Add(days)) {
					t.Errorf("%s: NotAfter %v, want about %d days from now", c.Subject.CommonName, c.NotAfter, tc.wantDays[i])
				}
				if !strings.HasPrefix(certs.KeyDescription(c.PublicKey), tc.wantKey) {
					t.Errorf("%s: key %s, want %s", c.Subject.CommonName, certs.KeyDescription(c.PublicKey), tc.wantKey)
				}
			}
			switch tc.wantKey {
			case "RSA":
				if k := leaf.PublicKey.(*rsa.PublicKey); k.N.BitLen() != 3072 {
					t.Errorf("leaf RSA bits %d, want 3072", k.N.BitLen())
				}
			default:
				if _, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok {
					t.Errorf("leaf key %T", leaf.PublicKey)
				}
			}
			roots := x509.NewCertPool()
			roots.AddCert(ca)
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("crypto/x509: client does not verify under the CA: %v", err)
			}
			for _, f := range []string{"ca.key", "client.key"} {
				if m := fileMode(t, filepath.Join(dir, f)); m != 0o600 {
					t.Errorf("%s mode %o, want 600", f, m)
				}
			}

			v, err := exec.Command(openssl, "verify", "-CAfile", filepath.Join(dir, "ca.pem"), "-purpose", "sslclient", filepath.Join(dir, "client.pem")).CombinedOutput()
			if err != nil || !strings.Contains(string(v), "client.pem: OK") {
				t.Errorf("openssl verify: %v\n%s", err, v)
			}
			text, err := exec.Command(openssl, "x509", "-in", filepath.Join(dir, "client.pem"), "-noout", "-text").CombinedOutput()
			if err != nil || !strings.Contains(string(text), "CA:FALSE") || !strings.Contains(string(text), "TLS Web Client Authentication") {
				t.Errorf("openssl x509 -text: %v\n%s", err, text)
			}
			// A CA is not a client certificate: openssl agrees.
			if v, err := exec.Command(openssl, "verify", "-CAfile", filepath.Join(dir, "client.pem"), filepath.Join(dir, "ca.pem")).CombinedOutput(); err == nil {
				t.Errorf("openssl verified the CA under the client certificate:\n%s", v)
			}
		})
	}
}

func TestCertsNeverOverwriteWithoutForce(t *testing.T) {
	dir := t.TempDir()
	if code, out, errOut := certsRun(t, dir, "ca", "--cn", "first"); code != 0 {
		t.Fatalf("certs ca: %d\n%s%s", code, out, errOut)
	}
	keyBefore, _ := os.ReadFile(filepath.Join(dir, "ca.key"))
	code, _, errOut := certsRun(t, "", "ca", "--cn", "second")
	if code != 2 || !strings.Contains(errOut, "ca.pem: already exists (use --force to overwrite)") {
		t.Fatalf("second certs ca: exit %d, %q; want 2 and an already-exists error", code, errOut)
	}
	if keyAfter, _ := os.ReadFile(filepath.Join(dir, "ca.key")); !bytes.Equal(keyBefore, keyAfter) {
		t.Fatal("ca.key was overwritten without --force")
	}
	if code, _, _ := certsRun(t, "", "client", "--cn", "app.example.com"); code != 0 {
		t.Fatal("certs client with the default --ca ca and --out client failed")
	}
	code, _, errOut = certsRun(t, "", "client", "--cn", "app.example.com")
	if code != 2 || !strings.Contains(errOut, "client.pem: already exists") {
		t.Fatalf("second certs client: exit %d, %q", code, errOut)
	}
	os.Chmod(filepath.Join(dir, "ca.key"), 0o644)
	if code, _, errOut := certsRun(t, "", "ca", "--cn", "second", "--force"); code != 0 {
		t.Fatalf("certs ca --force: %d %s", code, errOut)
	}
	if cn := readCert(t, filepath.Join(dir, "ca.pem")).Subject.CommonName; cn != "second" {
		t.Errorf("after --force the CA is %q", cn)
	}
	if m := fileMode(t, filepath.Join(dir, "ca.key")); m != 0o600 {
		t.Errorf("ca.key mode after --force: %o", m)
	}
}

func TestCertsBadInvocations(t *testing.T) {
	dir := t.TempDir()
	if code, _, _ := certsRun(t, dir, "ca", "--cn", "CA"); code != 0 {
		t.Fatal("certs ca failed")
	}
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no command", nil, 2, "Usage: aopguard certs COMMAND"},
		{"unknown command", []string{"frob"}, 2, `unknown command "frob"`},
		{"ca without cn", []string{"ca", "--out", "x"}, 2, "--cn is required"},
		{"ca bad key type", []string{"ca", "--cn", "x", "--out", "x", "--key-type", "dsa"}, 2, "--key-type"},
		{"ca bad rsa bits", []string{"ca", "--cn", "x", "--out", "x", "--key-type", "rsa", "--rsa-bits", "1024"}, 2, "--rsa-bits"},
		{"ca negative days", []string{"ca", "--cn", "x", "--out", "x", "--days", "-1"}, 2, "--days"},
		{"client without the CA files", []string{"client", "--cn", "x", "--ca", "absent", "--out", "x"}, 1, "absent.pem"},
		{"client outliving its CA", []string{"client", "--cn", "x", "--days", "4000", "--out", "x"}, 1, "would outlive the CA"},
		{"payload without flags", []string{"payload"}, 2, "give --cert and --key, or --hostnames and --cert-id"},
		{"payload mixing both", []string{"payload", "--cert", "a", "--hostnames", "b"}, 2, "separate calls"},
		{"payload hostnames without id", []string{"payload", "--hostnames", "app.example.com"}, 2, "go together"},
		{"payload cert without key", []string{"payload", "--cert", "ca.pem"}, 2, "--cert and --key go together"},
		{"payload of the CA", []string{"payload", "--cert", "ca.pem", "--key", "ca.key"}, 1, "is a CA certificate; Cloudflare accepts only a leaf"},
		{"payload missing file", []string{"payload", "--cert", "absent.pem", "--key", "ca.key"}, 1, "absent.pem"},
		{"inspect nothing", []string{"inspect"}, 2, "name at least one PEM file"},
		{"inspect with a bad config", []string{"inspect", "--config", "absent.yaml", "ca.pem"}, 2, "absent.yaml"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := certsRun(t, dir, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut, tc.code, tc.want)
			}
		})
	}
	for _, sub := range []string{"ca", "client", "payload", "inspect"} {
		if code, out, errOut := certsRun(t, dir, sub, "-h"); code != 0 || !strings.Contains(out, "Usage: aopguard certs "+sub) {
			t.Errorf("certs %s -h: exit %d\n%s%s", sub, code, out, errOut)
		}
	}
}

func TestCertsPayload(t *testing.T) {
	dir := t.TempDir()
	if code, _, _ := certsRun(t, dir, "ca", "--cn", "Example AOP CA"); code != 0 {
		t.Fatal("certs ca failed")
	}
	if code, _, _ := certsRun(t, "", "client", "--cn", "app.example.com"); code != 0 {
		t.Fatal("certs client failed")
	}
	certPEM, _ := os.ReadFile(filepath.Join(dir, "client.pem"))
	keyPEM, _ := os.ReadFile(filepath.Join(dir, "client.key"))

	code, out, errOut := certsRun(t, "", "payload", "--cert", "client.pem", "--key", "client.key")
	if code != 0 {
		t.Fatalf("payload: exit %d\n%s", code, errOut)
	}
	var body map[string]string
	if err := json.Unmarshal([]byte(out), &body); err != nil {
		t.Fatalf("payload is not JSON: %v\n%s", err, out)
	}
	if body["certificate"] != string(certPEM) || body["private_key"] != string(keyPEM) || len(body) != 2 {
		t.Errorf("payload does not round-trip to the PEM files:\n%s", out)
	}

	// Mismatched key.
	other := testpki.Client(t, testpki.CA(t, "x"), "other")
	testpki.WriteFile(t, dir, "other.key", other.KeyPEM())
	if code, _, errOut := certsRun(t, "", "payload", "--cert", "client.pem", "--key", "other.key"); code != 1 || !strings.Contains(errOut, "do not go together") {
		t.Errorf("mismatched key: exit %d, %q", code, errOut)
	}

	// Enabling per-hostname AOP.
	code, out, _ = certsRun(t, "", "payload", "--hostnames", "app.example.com,api.example.com", "--cert-id", "2458ce5a-0c35-4c7f-82c7-8e9487d3ff60")
	want := `{"config":[{"hostname":"app.example.com","cert_id":"2458ce5a-0c35-4c7f-82c7-8e9487d3ff60","enabled":true},{"hostname":"api.example.com","cert_id":"2458ce5a-0c35-4c7f-82c7-8e9487d3ff60","enabled":true}]}` + "\n"
	if code != 0 || out != want {
		t.Errorf("hostnames body: exit %d\n%s\nwant\n%s", code, out, want)
	}
	if code, out, _ := certsRun(t, "", "payload", "--hostnames", "app.example.com", "--cert-id", "id", "--disable"); code != 0 || !strings.Contains(out, `"enabled":false`) {
		t.Errorf("--disable: exit %d %s", code, out)
	}
}

// TestCertsPayloadOpensslECKey feeds payload what "openssl ecparam
// -genkey" writes: an EC PARAMETERS block before the key.
func TestCertsPayloadOpensslECKey(t *testing.T) {
	openssl := tool(t, "openssl")
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(openssl, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
	}
	run("ecparam", "-name", "prime256v1", "-genkey", "-out", "ec.key")
	run("req", "-new", "-x509", "-key", "ec.key", "-subj", "/CN=app.example.com", "-days", "30",
		"-addext", "basicConstraints=critical,CA:FALSE", "-addext", "extendedKeyUsage=clientAuth", "-out", "ec.pem")
	keyFile, _ := os.ReadFile(filepath.Join(dir, "ec.key"))
	if !bytes.Contains(keyFile, []byte("-----BEGIN EC PARAMETERS-----")) {
		t.Fatalf("openssl ecparam -genkey wrote no EC PARAMETERS block:\n%s", keyFile)
	}
	var keyBlock []byte
	for rest := keyFile; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type == "EC PRIVATE KEY" {
			keyBlock = pem.EncodeToMemory(b)
		}
	}
	certFile, _ := os.ReadFile(filepath.Join(dir, "ec.pem"))

	code, out, errOut := certsRun(t, dir, "payload", "--cert", "ec.pem", "--key", "ec.key")
	if code != 0 {
		t.Fatalf("payload: exit %d\n%s", code, errOut)
	}
	if strings.Contains(out, "EC PARAMETERS") {
		t.Errorf("payload keeps the EC PARAMETERS block:\n%s", out)
	}
	var body struct {
		Certificate string `json:"certificate"`
		PrivateKey  string `json:"private_key"`
	}
	if err := json.Unmarshal([]byte(out), &body); err != nil {
		t.Fatal(err)
	}
	if body.Certificate != string(certFile) || body.PrivateKey != string(keyBlock) {
		t.Errorf("payload:\n%s\nwant the certificate and\n%s", out, keyBlock)
	}
}

func TestCertsInspect(t *testing.T) {
	p := newPKI(t)
	p.write(t, "cloudflare.pem", certs.CloudflareOriginPullPEM())
	p.write(t, "bundle.pem", testpki.Bundle(p.hostLeaf, p.hostCA))
	cfg := writeConfig(t, p.dir, `
upstream: http://127.0.0.1:1
mode: require
zone_ca: zone-ca.pem
hosts:
  - name: app.example.com
    ca: host-ca.pem
  - name: open.example.com
    mode: "off"
`)
	code, out, errOut := certsRun(t, p.dir, "inspect", "cloudflare.pem", "host-client.pem", "bundle.pem", "absent.pem", "zone-client.pem", "--config", cfg)
	if code != 1 || !strings.Contains(errOut, "absent.pem") {
		t.Errorf("exit %d, stderr %q; want 1 naming absent.pem", code, errOut)
	}
	sections := map[string]string{}
	for _, s := range strings.Split(out, "\n\n") {
		head, _, _ := strings.Cut(s, "\n")
		sections[head] = s
	}
	want := map[string][]string{
		"cloudflare.pem [1/1]": {
			"subject:     CN=origin-pull.cloudflare.net", "key:         RSA 4096",
			"sha256:      9a1ac2b4be15f9f27eee20a734cba4e9898f61001b3bd7c84b69b56a3e25a2b9",
			"type:        CA (CA:TRUE, path length 2)", "cloudflare:  this IS Cloudflare's origin-pull CA", "trusted by:  no policy",
		},
		"host-client.pem [1/1]": {
			"subject:     CN=app.example.com,O=aopguard tests", "issuer:      CN=app AOP CA,O=aopguard tests",
			"key:         ECDSA P-256", "days left)", "sha256:      " + certs.Fingerprint(p.hostLeaf.Cert.Raw),
			"type:        leaf (CA:FALSE)", "ext usage:   clientAuth", "does not chain to Cloudflare's origin-pull CA",
			"_zone (require)              reject: FAILED:untrusted",
			"app.example.com (require)    allow: SUCCESS",
			"open.example.com (off)       allow: not checked (mode off)",
			"accepted by: app.example.com",
		},
		"bundle.pem [1/2]": {"subject:     CN=app.example.com", "accepted by: app.example.com"},
		"bundle.pem [2/2]": {"subject:     CN=app AOP CA", "type:        CA (CA:TRUE)", "trusted by:  app.example.com (require)"},
		"zone-client.pem [1/1]": {
			"_zone (require)              allow: SUCCESS",
			"app.example.com (require)    reject: FAILED:",
			"accepted by: _zone\n",
		},
	}
	for head, lines := range want {
		s, ok := sections[head]
		if !ok {
			t.Errorf("no section %q in:\n%s", head, out)
			continue
		}
		for _, l := range lines {
			if !strings.Contains(s+"\n", l) {
				t.Errorf("section %q lacks %q:\n%s", head, l, s)
			}
		}
	}
}

// TestCertsServer makes origin certificates with the command, self-signed
// and from a CA, and has openssl verify them for their names.
func TestCertsServer(t *testing.T) {
	openssl := tool(t, "openssl")
	dir := t.TempDir()
	if code, out, errOut := certsRun(t, dir, "ca", "--cn", "Example Origin CA", "--out", "origin-ca"); code != 0 {
		t.Fatalf("certs ca: %d\n%s%s", code, out, errOut)
	}
	cases := []struct {
		name   string
		args   []string
		trust  string // openssl's -CAfile
		verify []string
	}{
		{"self-signed", []string{"--cn", "app.example.com", "--dns", "localhost", "--ip", "127.0.0.1,::1", "--out", "self"}, "self.pem",
			[]string{"-verify_hostname", "app.example.com"}},
		{"self-signed, IP name", []string{"--cn", "app.example.com", "--ip", "127.0.0.1", "--out", "self-ip"}, "self-ip.pem",
			[]string{"-verify_ip", "127.0.0.1"}},
		{"from a CA, RSA", []string{"--cn", "app.example.com", "--ca", "origin-ca", "--key-type", "rsa", "--out", "signed"}, "origin-ca.pem",
			[]string{"-verify_hostname", "app.example.com"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := certsRun(t, dir, append([]string{"server"}, tc.args...)...)
			base := tc.args[len(tc.args)-1]
			if code != 0 || !strings.Contains(out, "wrote "+base+".pem (certificate) and "+base+".key (private key, mode 0600)") {
				t.Fatalf("certs server: exit %d\n%s%s", code, out, errOut)
			}
			if m := fileMode(t, filepath.Join(dir, base+".key")); m != 0o600 {
				t.Errorf("key mode %o, want 600", m)
			}
			args := append([]string{"verify", "-purpose", "sslserver", "-CAfile", filepath.Join(dir, tc.trust)}, tc.verify...)
			v, err := exec.Command(openssl, append(args, filepath.Join(dir, base+".pem"))...).CombinedOutput()
			if err != nil || !strings.Contains(string(v), base+".pem: OK") {
				t.Errorf("openssl %v: %v\n%s", args, err, v)
			}
			// The wrong name does not verify: the names are what clients check.
			args = []string{"verify", "-purpose", "sslserver", "-CAfile", filepath.Join(dir, tc.trust), "-verify_hostname", "other.example.com"}
			if v, err := exec.Command(openssl, append(args, filepath.Join(dir, base+".pem"))...).CombinedOutput(); err == nil {
				t.Errorf("openssl verified %s for other.example.com:\n%s", base, v)
			}
			if _, err := certs.LoadKeyPair(filepath.Join(dir, base+".pem"), filepath.Join(dir, base+".key")); err != nil {
				t.Errorf("aopguard cannot load the pair: %v", err)
			}
		})
	}

	bad := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no cn", []string{"--out", "x"}, 2, "--cn is required"},
		{"no name for the SAN", []string{"--cn", "my origin", "--out", "x"}, 2, "no DNS name or IP address"},
		{"bad ip", []string{"--cn", "app.example.com", "--ip", "300.1.1.1", "--out", "x"}, 2, `--ip: "300.1.1.1" is not an IP address`},
		{"bad dns", []string{"--cn", "app.example.com", "--dns", "a b", "--out", "x"}, 2, `DNS name "a b"`},
		{"existing files", []string{"--cn", "app.example.com", "--out", "self"}, 2, "self.pem: already exists (use --force to overwrite)"},
		{"absent CA", []string{"--cn", "app.example.com", "--ca", "absent", "--out", "x"}, 1, "absent.pem"},
		{"a leaf as CA", []string{"--cn", "app.example.com", "--ca", "self", "--out", "x"}, 1, "is not a CA certificate"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := certsRun(t, dir, append([]string{"server"}, tc.args...)...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut, tc.code, tc.want)
			}
		})
	}
	before, _ := os.ReadFile(filepath.Join(dir, "self.key"))
	if code, _, _ := certsRun(t, dir, "server", "--cn", "app.example.com", "--out", "self", "--force"); code != 0 {
		t.Fatal("--force did not overwrite")
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "self.key")); bytes.Equal(before, after) {
		t.Error("--force left the old key")
	}
	if m := fileMode(t, filepath.Join(dir, "self.key")); m != 0o600 {
		t.Errorf("key mode after --force %o, want 600", m)
	}
}

// TestCertsMLDSA issues post-quantum CAs and client certificates with
// every ML-DSA parameter set and checks the seed-only keys, the upload
// body and what inspect says.
func TestCertsMLDSA(t *testing.T) {
	for _, level := range []string{"44", "65", "87"} {
		t.Run("ml-dsa-"+level, func(t *testing.T) {
			keyType := "ml-dsa-" + level
			dir := t.TempDir()
			code, out, errOut := certsRun(t, dir, "ca", "--cn", "PQ AOP CA", "--key-type", keyType, "--out", "ca")
			if code != 0 || !strings.Contains(out, "ML-DSA-"+level+" (post-quantum)") || !strings.Contains(out, "--key-type "+keyType) {
				t.Fatalf("certs ca: exit %d\n%s%s", code, out, errOut)
			}
			code, out, errOut = certsRun(t, "", "client", "--ca", "ca", "--cn", "app.example.com", "--key-type", keyType, "--out", "client")
			if code != 0 {
				t.Fatalf("certs client: exit %d\n%s%s", code, out, errOut)
			}
			ca, leaf := readCert(t, filepath.Join(dir, "ca.pem")), readCert(t, filepath.Join(dir, "client.pem"))
			wantSig := map[string]x509.SignatureAlgorithm{"44": x509.MLDSA44, "65": x509.MLDSA65, "87": x509.MLDSA87}[level]
			for _, c := range []*x509.Certificate{ca, leaf} {
				if c.PublicKeyAlgorithm != x509.MLDSA || c.SignatureAlgorithm != wantSig {
					t.Errorf("%s: key %v signature %v, want ML-DSA / %v", c.Subject.CommonName, c.PublicKeyAlgorithm, c.SignatureAlgorithm, wantSig)
				}
			}
			if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("leaf key usage %v, want digitalSignature only", certs.KeyUsageNames(leaf.KeyUsage))
			}
			roots := x509.NewCertPool()
			roots.AddCert(ca)
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("client does not verify under the CA: %v", err)
			}
			for _, f := range []string{"ca.key", "client.key"} {
				if m := fileMode(t, filepath.Join(dir, f)); m != 0o600 {
					t.Errorf("%s mode %o, want 600", f, m)
				}
				if !seedOnly(t, filepath.Join(dir, f)) {
					t.Errorf("%s is not a seed-only ML-DSA PKCS#8 key", f)
				}
			}

			code, out, errOut = certsRun(t, "", "payload", "--cert", "client.pem", "--key", "client.key")
			var body certs.UploadBody
			if code != 0 || json.Unmarshal([]byte(out), &body) != nil {
				t.Fatalf("certs payload: exit %d\n%s%s", code, out, errOut)
			}
			keyPEM, _ := os.ReadFile(filepath.Join(dir, "client.key"))
			if body.PrivateKey != string(keyPEM) || !strings.HasPrefix(body.Certificate, "-----BEGIN CERTIFICATE-----\n") {
				t.Errorf("upload body does not carry the seed-only key and the certificate:\n%s", out)
			}

			code, out, _ = certsRun(t, "", "inspect", "client.pem")
			for _, want := range []string{"key:         ML-DSA-" + level + " (post-quantum)", "signature:   ML-DSA-" + level + " (post-quantum)"} {
				if code != 0 || !strings.Contains(out, want) {
					t.Errorf("certs inspect: exit %d, no %q:\n%s", code, want, out)
				}
			}
		})
	}
	t.Run("bad key type", func(t *testing.T) {
		code, _, errOut := certsRun(t, t.TempDir(), "ca", "--cn", "x", "--key-type", "ml-dsa-99")
		if code != 2 || !strings.Contains(errOut, "ml-dsa-44, ml-dsa-65, ml-dsa-87") {
			t.Errorf("exit %d, %q", code, errOut)
		}
	})
}

// seedOnly reports whether file holds an ML-DSA PKCS#8 key in the seed-only
// form of RFC 9881: privateKey is [0] IMPLICIT OCTET STRING (SIZE (32)).
func seedOnly(t *testing.T, file string) bool {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "PRIVATE KEY" {
		return false
	}
	var k struct {
		Version    int
		Algo       struct{ Algorithm asn1.ObjectIdentifier }
		PrivateKey []byte
	}
	if _, err := asn1.Unmarshal(b.Bytes, &k); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return len(k.PrivateKey) == 34 && k.PrivateKey[0] == 0x80 && k.PrivateKey[1] == 32 &&
		k.Algo.Algorithm.String() >= "2.16.840.1.101.3.4.3.17" && k.Algo.Algorithm.String() <= "2.16.840.1.101.3.4.3.19"
}
