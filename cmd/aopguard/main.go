// Command aopguard terminates TLS in front of an origin web app, lets in only
// connections that present Cloudflare's Authenticated Origin Pulls client
// certificate (zone-wide or per hostname), and forwards them to the app.
//
//	aopguard run [--config FILE] [--listen ADDR] [--upstream URL] [--mode off|log-only|require]
//	             [--zone-ca cloudflare|FILE] [--cert FILE --key FILE] [--admin ADDR]
//	aopguard status [--config FILE | --admin ADDR | --prometheus URL] [--json] [-v]
//	aopguard check --origin ADDR --host NAME [--client-cert FILE --client-key FILE] [--expect require|log-only] [--json]
//	aopguard certs ca|client|server|payload|inspect [flags]
//	aopguard cloudflare audit|apply|rotate [flags]
//	aopguard version
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

// Exit codes: 2 for anything the user must fix in the invocation or the
// configuration, 1 for runtime failures.
const (
	exitOK     = 0
	exitFail   = 1
	exitConfig = 2
)

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `aopguard lets only Cloudflare (Authenticated Origin Pulls) reach your app.

Usage:
  aopguard run [flags]    terminate TLS, verify client certificates, proxy to the app
  aopguard status         is it safe to switch log-only policies to require?
  aopguard check [flags]  probe a deployed origin as an attacker and as Cloudflare would
  aopguard certs CMD      make a private AOP CA and client certificates, the origin's
                          server certificate, the upload JSON for Cloudflare, or
                          inspect certificates
  aopguard cloudflare CMD
                          audit, apply or rotate Authenticated Origin Pulls at
                          Cloudflare (API token in CLOUDFLARE_API_TOKEN)
  aopguard version        print the version

Run "aopguard COMMAND -h" (or "aopguard help COMMAND") for a command's flags.
`

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitConfig
	}
	switch args[0] {
	case "run":
		return runCommand(args[1:], stdout, stderr)
	case "status":
		return statusCommand(args[1:], stdout, stderr)
	case "check":
		return checkCommand(args[1:], stdout, stderr)
	case "certs":
		return certsCommand(args[1:], stdout, stderr)
	case "cloudflare":
		return cloudflareCommand(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		if len(args) > 1 && (args[1] == "-h" || args[1] == "--help" || args[1] == "-help") {
			fmt.Fprint(stdout, "Usage: aopguard version\n\nPrints aopguard's version and the Go version it was built with.\n")
			return exitOK
		}
		fmt.Fprintf(stdout, "aopguard %s\n", versionString())
		return exitOK
	case "help", "-h", "--help", "-help":
		if len(args) > 1 && args[0] == "help" { // "aopguard help run" is "aopguard run -h"
			return dispatch(append(args[1:], "-h"), stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "aopguard: unknown command %q\n\n%s", args[0], usage)
	return exitConfig
}

func versionString() string {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		return fmt.Sprintf("%s (%s)", v, bi.GoVersion)
	}
	return v
}

// exitError carries an exit code up to dispatch.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitFail
}
