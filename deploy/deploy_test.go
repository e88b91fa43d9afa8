// Package deploy holds the deployment examples (Kubernetes, systemd,
// Prometheus, Grafana); its tests keep them consistent with aopguard and
// with themselves.
package deploy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/aopguard/aopguard/config"
)

// The deployment examples are documentation that people copy; these tests
// keep them consistent with aopguard and with themselves.
const (
	sidecarManifest = "kubernetes/sidecar.yaml"
	sidecarREADME   = "kubernetes/README.md"
	systemdUnit     = "systemd/aopguard.service"
)

// exitConfig is aopguard's exit status for a bad invocation or
// configuration (cmd/aopguard, and the README's "Exit codes").
const exitConfig = 2

func readDeployFile(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestDeployKubernetesSidecar(t *testing.T) {
	problems := checkSidecar(readDeployFile(t, sidecarManifest), readDeployFile(t, sidecarREADME))
	for _, p := range problems {
		t.Errorf("%s: %s", sidecarManifest, p)
	}
}

func TestDeploySystemdUnit(t *testing.T) {
	for _, p := range checkUnit(readDeployFile(t, systemdUnit)) {
		t.Errorf("%s: %s", systemdUnit, p)
	}
}

// TestDeployChecksCatchMistakes breaks the real files one way at a time and
// expects the checks above to notice, so they cannot pass vacuously.
func TestDeployChecksCatchMistakes(t *testing.T) {
	manifest := readDeployFile(t, sidecarManifest)
	readme := readDeployFile(t, sidecarREADME)
	unit := readDeployFile(t, systemdUnit)
	cases := []struct {
		name     string
		file     string // "manifest", "readme" or "unit"
		old, new string
		want     string // substring of one problem
	}{
		{"admin on loopback", "manifest", `admin: ":9090"`, `admin: "127.0.0.1:9090"`, "loopback"},
		{"readiness probe port", "manifest", "readinessProbe:\n            httpGet:\n              path: /readyz\n              port: 9090", "readinessProbe:\n            httpGet:\n              path: /readyz\n              port: 9091", "readinessProbe port 9091"},
		{"readiness on liveness", "manifest", "readinessProbe:\n            httpGet:\n              path: /readyz", "readinessProbe:\n            httpGet:\n              path: /healthz", "readinessProbe path"},
		{"not Type=notify", "unit", "Type=notify\n", "Type=exec\n", "Type"},
		{"liveness probe path", "manifest", "livenessProbe:\n            httpGet:\n              path: /healthz", "livenessProbe:\n            httpGet:\n              path: /status", "livenessProbe path"},
		{"container port", "manifest", "containerPort: 8443", "containerPort: 8444", "listen port 8443"},
		{"service targetPort", "manifest", "targetPort: 8443", "targetPort: 8080", "targetPort"},
		{"prometheus port", "manifest", `prometheus.io/port: "9090"`, `prometheus.io/port: "8080"`, "prometheus.io/port"},
		{"bad mode", "manifest", "    mode: log-only\n    zone_ca", "    mode: enforce\n    zone_ca", "enforce"},
		{"starts enforcing", "manifest", "    mode: log-only\n    zone_ca", "    mode: require\n    zone_ca", "log-only"},
		{"CA outside the Secret", "manifest", "ca: /etc/aopguard/aop/app-ca.pem", "ca: /etc/aopguard/ca/app-ca.pem", "appears as ca/app-ca.pem"},
		{"subPath mount", "manifest", "mountPath: /etc/aopguard/aop\n", "mountPath: /etc/aopguard/aop/app-ca.pem\n              subPath: app-ca.pem\n", "subPath"},
		{"config path", "manifest", `args: ["run", "--config", "/etc/aopguard/aopguard.yaml"]`, `args: ["run", "--config", "/etc/aopguard/other.yaml"]`, "other.yaml"},
		{"short grace period", "manifest", "terminationGracePeriodSeconds: 40", "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds"},
		{"writable root", "manifest", "readOnlyRootFilesystem: true\n            allowPrivilegeEscalation: false\n            capabilities:\n              drop: [\"ALL\"]\n          resources:\n            requests:\n              cpu: 100m\n              memory: 64Mi", "readOnlyRootFilesystem: false\n            allowPrivilegeEscalation: false\n            capabilities:\n              drop: [\"ALL\"]\n          resources:\n            requests:\n              cpu: 100m\n              memory: 64Mi", "readOnlyRootFilesystem"},
		{"no fsGroup", "manifest", "        fsGroup: 65532\n", "", "fsGroup"},
		{"upstream off the Pod", "manifest", `upstream: "http://127.0.0.1:8080"`, `upstream: "http://app.default.svc:8080"`, "upstream"},
		{"one replica", "manifest", "replicas: 2", "replicas: 1", "replicas"},
		{"no ConfigMap", "manifest", "kind: ConfigMap", "kind: ConfigMapp", "no ConfigMap"},
		{"ticket keys outside the Secret", "manifest", "session_ticket_keys: /etc/aopguard/tickets/ticket-keys", "session_ticket_keys: /etc/aopguard/keys/ticket-keys", "keys/ticket-keys"},
		{"README without the ticket keys Secret", "readme", "create secret generic aopguard-ticket-keys", "create secret generic ticket-keys", `"aopguard-ticket-keys"`},
		{"PROXY protocol from nobody", "manifest", `trusted: ["10.0.0.0/8"]`, `trusted: []`, "proxy_protocol.trusted"},
		{"README secret name", "readme", "create secret generic aop-ca", "create secret generic aop-bundle", `"aop-ca"`},
		{"no ExecReload", "unit", "ExecReload=/bin/kill -HUP $MAINPID\n", "", "ExecReload"},
		{"DynamicUser", "unit", "DynamicUser=yes", "DynamicUser=no", "DynamicUser"},
		{"NoNewPrivileges", "unit", "NoNewPrivileges=yes", "NoNewPrivileges=no", "NoNewPrivileges"},
		{"ProtectSystem", "unit", "ProtectSystem=strict", "ProtectSystem=full", "ProtectSystem"},
		{"AmbientCapabilities", "unit", "AmbientCapabilities=CAP_NET_BIND_SERVICE", "AmbientCapabilities=CAP_NET_ADMIN", "AmbientCapabilities"},
		{"RestartPreventExitStatus", "unit", "RestartPreventExitStatus=2", "RestartPreventExitStatus=3", "RestartPreventExitStatus"},
		{"TimeoutStopSec", "unit", "TimeoutStopSec=40", "TimeoutStopSec=20s", "TimeoutStopSec"},
		{"ExecStart without --config", "unit", "ExecStart=/usr/local/bin/aopguard run --config /etc/aopguard/aopguard.yaml", "ExecStart=/usr/local/bin/aopguard run", "--config"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{"manifest": manifest, "readme": readme, "unit": unit}
			if !strings.Contains(files[tc.file], tc.old) {
				t.Fatalf("the %s no longer contains %q: update this mutation", tc.file, tc.old)
			}
			files[tc.file] = strings.ReplaceAll(files[tc.file], tc.old, tc.new)
			var problems []string
			if tc.file == "unit" {
				problems = checkUnit(files["unit"])
			} else {
				problems = checkSidecar(files["manifest"], files["readme"])
			}
			for _, p := range problems {
				if strings.Contains(p, tc.want) {
					return
				}
			}
			t.Errorf("no problem mentions %q; got %q", tc.want, problems)
		})
	}
}

// The subset of Kubernetes objects the checks look at.
type k8sMeta struct {
	Name        string            `yaml:"name"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type k8sObject struct {
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Metadata   k8sMeta           `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	Spec       yaml.Node         `yaml:"spec"`
}

type k8sDeploymentSpec struct {
	Replicas int `yaml:"replicas"`
	Selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
	Template struct {
		Metadata k8sMeta    `yaml:"metadata"`
		Spec     k8sPodSpec `yaml:"spec"`
	} `yaml:"template"`
}

type k8sPodSpec struct {
	TerminationGracePeriodSeconds *int `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               struct {
		RunAsNonRoot *bool `yaml:"runAsNonRoot"`
		FSGroup      *int  `yaml:"fsGroup"`
	} `yaml:"securityContext"`
	Containers     []k8sContainer `yaml:"containers"`
	InitContainers []k8sContainer `yaml:"initContainers"`
	Volumes        []k8sVolume    `yaml:"volumes"`
}

type k8sContainer struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Ports   []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	Lifecycle      struct {
		PreStop struct {
			Sleep *struct {
				Seconds int `yaml:"seconds"`
			} `yaml:"sleep"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
	SecurityContext struct {
		RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		Capabilities             struct {
			Add  []string `yaml:"add"`
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name        string `yaml:"name"`
		MountPath   string `yaml:"mountPath"`
		SubPath     string `yaml:"subPath"`
		SubPathExpr string `yaml:"subPathExpr"`
	} `yaml:"volumeMounts"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"` // a number or a port name
	} `yaml:"httpGet"`
}

type k8sKeyPath struct {
	Key  string `yaml:"key"`
	Path string `yaml:"path"`
}

type k8sVolume struct {
	Name      string `yaml:"name"`
	ConfigMap *struct {
		Name  string       `yaml:"name"`
		Items []k8sKeyPath `yaml:"items"`
	} `yaml:"configMap"`
	Secret *struct {
		SecretName  string       `yaml:"secretName"`
		DefaultMode *int         `yaml:"defaultMode"`
		Items       []k8sKeyPath `yaml:"items"`
	} `yaml:"secret"`
}

type k8sServiceSpec struct {
	Selector map[string]string `yaml:"selector"`
	Ports    []struct {
		Port       int `yaml:"port"`
		TargetPort any `yaml:"targetPort"`
	} `yaml:"ports"`
}

// checkSidecar checks deploy/kubernetes/sidecar.yaml (and the Secret names
// its README tells people to create) and returns every problem found.
func checkSidecar(manifest, readme string) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	var objects []k8sObject
	dec := yaml.NewDecoder(strings.NewReader(manifest))
	for i := 0; ; i++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			bad("document %d is not YAML: %v", i, err)
			return problems
		}
		if len(n.Content) == 0 || n.Content[0].Tag == "!!null" {
			continue
		}
		var o k8sObject
		if err := n.Decode(&o); err != nil {
			bad("document %d: %v", i, err)
			continue
		}
		if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
			bad("document %d (line %d) needs apiVersion, kind and metadata.name", i, n.Line)
		}
		objects = append(objects, o)
	}
	byKind := func(kind string) []k8sObject {
		var out []k8sObject
		for _, o := range objects {
			if o.Kind == kind {
				out = append(out, o)
			}
		}
		return out
	}
	configMaps := map[string]map[string]string{}
	for _, o := range byKind("ConfigMap") {
		configMaps[o.Metadata.Name] = o.Data
	}
	if len(configMaps) == 0 {
		bad("no ConfigMap holds aopguard.yaml")
	}
	deployments := byKind("Deployment")
	if len(deployments) != 1 {
		bad("want one Deployment, found %d", len(deployments))
		return problems
	}
	var dep k8sDeploymentSpec
	if err := deployments[0].Spec.Decode(&dep); err != nil {
		bad("Deployment spec: %v", err)
		return problems
	}
	if dep.Replicas < 2 {
		bad("Deployment replicas %d: the example shows several replicas", dep.Replicas)
	}
	pod := dep.Template.Spec
	podLabels := dep.Template.Metadata.Labels
	if len(dep.Selector.MatchLabels) == 0 || !labelsMatch(dep.Selector.MatchLabels, podLabels) {
		bad("Deployment selector %v does not select the Pod labels %v", dep.Selector.MatchLabels, podLabels)
	}
	for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
		for _, m := range c.VolumeMounts {
			if m.SubPath != "" || m.SubPathExpr != "" {
				bad("container %q mounts %q with subPath: Kubernetes never updates subPath mounts, so a rotated Secret would not reach it", c.Name, m.MountPath)
			}
		}
	}
	var guard *k8sContainer
	for i := range pod.Containers {
		if pod.Containers[i].Name == "aopguard" {
			guard = &pod.Containers[i]
		}
	}
	if guard == nil {
		bad("no container named aopguard")
		return problems
	}

	// The config file: --config FILE, served from a ConfigMap volume.
	argv := append(slices.Clone(guard.Command), guard.Args...)
	i := slices.Index(argv, "--config")
	if !slices.Contains(argv, "run") || i < 0 || i+1 >= len(argv) {
		bad("aopguard container: want args run --config FILE, got %q", argv)
		return problems
	}
	configPath := argv[i+1]
	src, err := mountedFile(*guard, pod.Volumes, configPath)
	if err != nil {
		bad("--config %s: %v", configPath, err)
		return problems
	}
	if src.kind != "configMap" {
		bad("--config %s comes from a %s volume, want the ConfigMap", configPath, src.kind)
		return problems
	}
	data, ok := configMaps[src.name][src.key]
	if !ok {
		bad("--config %s: ConfigMap %q has no key %q", configPath, src.name, src.key)
		return problems
	}
	cfg, err := config.Parse([]byte(data), path.Base(configPath), path.Dir(configPath))
	if err != nil {
		bad("the ConfigMap's config does not parse: %v", err)
		return problems
	}
	if cfg.Mode != "log-only" {
		bad("zone mode %q: the example starts in log-only (the staged rollout)", cfg.Mode)
	}
	for _, h := range cfg.Hosts {
		if h.Mode != "" && h.Mode != "log-only" {
			bad("host %s mode %q: the example starts in log-only", h.Name, h.Mode)
		}
	}

	// Every file the config names is in a mounted ConfigMap or Secret.
	files := []string{cfg.CRL, cfg.CloudflareIPs, cfg.SessionTicketKeys}
	if cfg.ZoneCA != config.CloudflareCA {
		files = append(files, cfg.ZoneCA)
	}
	for _, kp := range cfg.Certificates {
		files = append(files, kp.Cert, kp.Key)
	}
	for _, h := range cfg.Hosts {
		files = append(files, h.CA, h.CRL)
	}
	secretsUsed := map[string]bool{}
	for _, f := range files {
		if f == "" {
			continue
		}
		src, err := mountedFile(*guard, pod.Volumes, f)
		switch {
		case err != nil:
			bad("config names %s: %v", f, err)
		case src.kind == "configMap":
			if _, ok := configMaps[src.name][src.key]; !ok {
				bad("config names %s: ConfigMap %q has no key %q", f, src.name, src.key)
			}
		case src.kind == "secret":
			secretsUsed[src.name] = true
			if !strings.Contains(readme, src.key) {
				bad("config names %s, key %q of Secret %q, but README.md never mentions that key", f, src.key, src.name)
			}
			mode := 0o644 // Kubernetes' default
			if src.mode != nil {
				mode = *src.mode
			}
			switch {
			case mode&0o044 == 0:
				bad("Secret %q is mounted with mode %#o: aopguard (uid 65532) cannot read it", src.name, mode)
			case mode&0o004 == 0 && pod.SecurityContext.FSGroup == nil:
				bad("Secret %q is mounted with mode %#o (group-readable only): set the Pod's securityContext.fsGroup so aopguard's group owns the files", src.name, mode)
			}
		}
	}
	for name := range secretsUsed {
		if !readmeCreatesSecret(readme, name) {
			bad("README.md does not show how to create Secret %q (kubectl create secret ... %s)", name, name)
		}
	}

	// Ports: listener, admin, probes, annotations, Service.
	_, listenPort, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		bad("listen %q: %v", cfg.Listen, err)
	}
	adminHost, adminPort, err := net.SplitHostPort(cfg.Admin)
	if err != nil {
		bad("admin %q: %v", cfg.Admin, err)
	}
	if adminHost != "" && adminHost != "0.0.0.0" && adminHost != "::" {
		bad("admin %q listens on %s only (loopback, or one address): the kubelet probes and Prometheus come over the Pod IP; use %q", cfg.Admin, adminHost, ":"+adminPort)
	}
	containerPort := func(port string) bool {
		for _, p := range guard.Ports {
			if strconv.Itoa(p.ContainerPort) == port {
				return true
			}
		}
		return false
	}
	if !containerPort(listenPort) {
		bad("aopguard container does not declare the listen port %s as a containerPort", listenPort)
	}
	if !containerPort(adminPort) {
		bad("aopguard container does not declare the admin port %s as a containerPort", adminPort)
	}
	// Readiness follows /readyz (503 while starting and draining),
	// liveness /healthz (a failure restarts the container).
	for name, probe := range map[string]struct {
		p    *k8sProbe
		path string
	}{"readinessProbe": {guard.ReadinessProbe, "/readyz"}, "livenessProbe": {guard.LivenessProbe, "/healthz"}} {
		p := probe.p
		if p == nil || p.HTTPGet == nil {
			bad("aopguard container has no %s httpGet", name)
			continue
		}
		if p.HTTPGet.Path != probe.path {
			bad("%s path %q, want %s", name, p.HTTPGet.Path, probe.path)
		}
		if got := resolvePort(*guard, p.HTTPGet.Port); got != adminPort {
			bad("%s port %s is not the admin port %s", name, got, adminPort)
		}
	}
	ann := dep.Template.Metadata.Annotations
	if ann["prometheus.io/scrape"] != "true" {
		bad("Pod annotation prometheus.io/scrape is %q, want \"true\"", ann["prometheus.io/scrape"])
	}
	if ann["prometheus.io/port"] != adminPort {
		bad("Pod annotation prometheus.io/port is %q, want the admin port %s", ann["prometheus.io/port"], adminPort)
	}
	services := byKind("Service")
	if len(services) == 0 {
		bad("no Service")
	}
	for _, s := range services {
		var spec k8sServiceSpec
		if err := s.Spec.Decode(&spec); err != nil {
			bad("Service %s: %v", s.Metadata.Name, err)
			continue
		}
		if len(spec.Selector) == 0 || !labelsMatch(spec.Selector, podLabels) {
			bad("Service %s selector %v does not select the Pod labels %v", s.Metadata.Name, spec.Selector, podLabels)
		}
		found := false
		for _, p := range spec.Ports {
			if p.Port == 443 {
				found = true
				if got := resolvePort(*guard, p.TargetPort); got != listenPort {
					bad("Service %s port 443 targetPort %s is not aopguard's listen port %s", s.Metadata.Name, got, listenPort)
				}
			}
		}
		if !found {
			bad("Service %s has no port 443", s.Metadata.Name)
		}
	}

	// The app is reached over the Pod's loopback only.
	if u, err := url.Parse(cfg.Upstream); err == nil && u.Scheme != "unix" {
		if h := u.Hostname(); h != "localhost" && !net.ParseIP(h).IsLoopback() {
			bad("upstream %q: in a sidecar Pod the app listens on 127.0.0.1 only", cfg.Upstream)
		}
	}

	// Shutdown: SIGTERM drains for shutdown_timeout, after the preStop sleep.
	grace := 30 // Kubernetes' default
	if pod.TerminationGracePeriodSeconds != nil {
		grace = *pod.TerminationGracePeriodSeconds
	}
	need := cfg.ShutdownTimeout
	if s := guard.Lifecycle.PreStop.Sleep; s != nil {
		need += time.Duration(s.Seconds) * time.Second
	}
	if time.Duration(grace)*time.Second <= need {
		bad("terminationGracePeriodSeconds %d does not exceed shutdown_timeout plus the preStop sleep (%s): in-flight requests would be killed", grace, need)
	}

	// Sandboxing of the aopguard container.
	sc := guard.SecurityContext
	if !isTrue(sc.RunAsNonRoot) && !isTrue(pod.SecurityContext.RunAsNonRoot) {
		bad("aopguard container: set runAsNonRoot: true")
	}
	if !isTrue(sc.ReadOnlyRootFilesystem) {
		bad("aopguard container: set readOnlyRootFilesystem: true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		bad("aopguard container: set allowPrivilegeEscalation: false")
	}
	if !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		bad("aopguard container: drop ALL capabilities and add none (it listens on %s, above 1024)", listenPort)
	}
	return problems
}

func isTrue(b *bool) bool { return b != nil && *b }

func labelsMatch(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// resolvePort turns a probe or Service port (number or name) into a number.
func resolvePort(c k8sContainer, port any) string {
	switch p := port.(type) {
	case int:
		return strconv.Itoa(p)
	case string:
		for _, cp := range c.Ports {
			if cp.Name == p {
				return strconv.Itoa(cp.ContainerPort)
			}
		}
		return p
	}
	return fmt.Sprint(port)
}

// readmeCreatesSecret reports whether readme has a "kubectl create secret"
// line for the named Secret.
func readmeCreatesSecret(readme, name string) bool {
	sc := bufio.NewScanner(strings.NewReader(readme))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if i := slices.Index(f, "secret"); i > 0 && f[i-1] == "create" && i+2 < len(f) && f[i+2] == name {
			return true
		}
	}
	return false
}

type volumeFile struct {
	kind string // configMap or secret
	name string // the ConfigMap or Secret
	key  string
	mode *int
}

// mountedFile finds which ConfigMap or Secret key the container sees at
// file: the deepest mount holding it, a whole-volume mount, and the key
// (or item path) below it.
func mountedFile(c k8sContainer, volumes []k8sVolume, file string) (volumeFile, error) {
	best := -1
	for i, m := range c.VolumeMounts {
		mp := strings.TrimSuffix(m.MountPath, "/")
		if (file == mp || strings.HasPrefix(file, mp+"/")) && (best < 0 || len(mp) > len(c.VolumeMounts[best].MountPath)) {
			best = i
		}
	}
	if best < 0 {
		return volumeFile{}, errors.New("no Secret or ConfigMap volume is mounted there")
	}
	m := c.VolumeMounts[best]
	if m.SubPath != "" || m.SubPathExpr != "" {
		return volumeFile{}, fmt.Errorf("mounted with subPath (%s), which Kubernetes never updates", m.MountPath)
	}
	rel := strings.TrimPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")
	for _, v := range volumes {
		if v.Name != m.Name {
			continue
		}
		lookup := func(items []k8sKeyPath) (string, bool) {
			if len(items) == 0 {
				return rel, !strings.Contains(rel, "/")
			}
			for _, it := range items {
				if it.Path == rel {
					return it.Key, true
				}
			}
			return "", false
		}
		switch {
		case v.ConfigMap != nil:
			key, ok := lookup(v.ConfigMap.Items)
			if !ok {
				return volumeFile{}, fmt.Errorf("no key of ConfigMap %q appears as %s", v.ConfigMap.Name, rel)
			}
			return volumeFile{kind: "configMap", name: v.ConfigMap.Name, key: key}, nil
		case v.Secret != nil:
			key, ok := lookup(v.Secret.Items)
			if !ok {
				return volumeFile{}, fmt.Errorf("no key of Secret %q appears as %s", v.Secret.SecretName, rel)
			}
			return volumeFile{kind: "secret", name: v.Secret.SecretName, key: key, mode: v.Secret.DefaultMode}, nil
		default:
			return volumeFile{}, fmt.Errorf("volume %q is no Secret or ConfigMap volume", v.Name)
		}
	}
	return volumeFile{}, fmt.Errorf("volume %q is not defined", m.Name)
}

// checkUnit checks deploy/systemd/aopguard.service.
func checkUnit(text string) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	unit := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			if unit[section] == nil {
				unit[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" || strings.HasSuffix(line, `\`) {
				bad("line %d: %q is not key=value in a section", n, line)
				continue
			}
			unit[section][strings.TrimSpace(k)] = append(unit[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	svc := unit["Service"]
	last := func(key string) string {
		if v := svc[key]; len(v) > 0 {
			return v[len(v)-1]
		}
		return ""
	}
	yes := func(key string) {
		switch strings.ToLower(last(key)) {
		case "yes", "true", "on", "1":
		default:
			bad("[Service] %s=%q, want yes", key, last(key))
		}
	}
	equal := func(key, want string) {
		if got := last(key); got != want {
			bad("[Service] %s=%q, want %q", key, got, want)
		}
	}
	for _, k := range []string{"DynamicUser", "NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices",
		"LockPersonality", "MemoryDenyWriteExecute", "RestrictNamespaces"} {
		yes(k)
	}
	// aopguard notifies systemd when it serves (READY=1) and drains.
	equal("Type", "notify")
	equal("ProtectSystem", "strict")
	equal("AmbientCapabilities", "CAP_NET_BIND_SERVICE")
	equal("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE")
	equal("Restart", "on-failure")
	equal("StateDirectory", "aopguard")
	equal("ConfigurationDirectory", "aopguard")
	equal("SystemCallArchitectures", "native")
	if !slices.Contains(svc["SystemCallFilter"], "@system-service") {
		bad("[Service] SystemCallFilter does not allow @system-service only")
	}
	if f := strings.Fields(last("RestrictAddressFamilies")); !slices.Equal(f, []string{"AF_INET", "AF_INET6", "AF_UNIX"}) {
		bad("[Service] RestrictAddressFamilies=%q, want AF_INET AF_INET6 AF_UNIX", last("RestrictAddressFamilies"))
	}
	// Exit 2 is a bad configuration: a restart would fail the same way.
	if !slices.Contains(strings.Fields(strings.Join(svc["RestartPreventExitStatus"], " ")), strconv.Itoa(exitConfig)) {
		bad("[Service] RestartPreventExitStatus does not list %d (bad configuration)", exitConfig)
	}
	reload := strings.Fields(last("ExecReload"))
	if len(reload) == 0 || !path.IsAbs(reload[0]) || !slices.Contains(reload, "-HUP") || !slices.Contains(reload, "$MAINPID") {
		bad("[Service] ExecReload=%q, want /bin/kill -HUP $MAINPID", last("ExecReload"))
	}
	start := strings.Fields(last("ExecStart"))
	if len(start) < 4 || !path.IsAbs(start[0]) || path.Base(start[0]) != "aopguard" || start[1] != "run" {
		bad("[Service] ExecStart=%q, want /usr/local/bin/aopguard run --config /etc/aopguard/aopguard.yaml", last("ExecStart"))
	} else if i := slices.Index(start, "--config"); i < 0 || i+1 >= len(start) || path.Dir(start[i+1]) != "/etc/"+last("ConfigurationDirectory") {
		bad("[Service] ExecStart=%q: want --config FILE in /etc/%s (ConfigurationDirectory)", last("ExecStart"), last("ConfigurationDirectory"))
	}
	stop, err := systemdSeconds(last("TimeoutStopSec"))
	if err != nil || stop <= config.DefaultShutdownTimeout {
		bad("[Service] TimeoutStopSec=%q must exceed shutdown_timeout (%s), or SIGKILL cuts the drain short", last("TimeoutStopSec"), config.DefaultShutdownTimeout)
	}
	if n, err := strconv.Atoi(last("LimitNOFILE")); err != nil || n < config.DefaultMaxConnections {
		bad("[Service] LimitNOFILE=%q is below max_connections (%d)", last("LimitNOFILE"), config.DefaultMaxConnections)
	}
	if len(unit["Install"]["WantedBy"]) == 0 {
		bad("[Install] has no WantedBy")
	}
	return problems
}

// systemdSeconds parses a systemd time span: plain seconds or Go-style
// units (s, min, ms).
func systemdSeconds(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	return time.ParseDuration(strings.ReplaceAll(strings.ReplaceAll(s, "min", "m"), " ", ""))
}
