package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/aopguard/aopguard/certs"
	"github.com/aopguard/aopguard/tlsconfig"
)

const certsTicketKeysUsage = `Usage: aopguard certs ticket-keys --out FILE [--rotate] [--keep KEEP]

Makes the file of shared session ticket keys that session_ticket_keys names:
replicas that read the same file resume each other's TLS sessions. Without
--rotate it writes FILE with one new key (mode 0600) and refuses an existing
file. With --rotate it puts a new key first in an existing FILE — the new key
encrypts new tickets from then on, the others still decrypt — keeps the KEEP
newest old keys and drops the rest. Keys are never printed.

Give the file to every replica (for example as a Kubernetes Secret): aopguard
reloads it when it changes, like its other files. Rotate regularly (daily,
say); until every replica has the rotated file, a ticket from one that has
may cost a full handshake on one that has not.

Flags:
`

func certsTicketKeys(args []string, stdout, stderr io.Writer) error {
	flags := newCertsFlags("ticket-keys", certsTicketKeysUsage, stdout)
	out := flags.String("out", "", "write the keys to `FILE` (required)")
	rotate := flags.Bool("rotate", false, "add a new first key to the existing FILE")
	keep := flags.Int("keep", 2, fmt.Sprintf("with --rotate, keep the `KEEP` newest old keys (0 to %d)", tlsconfig.MaxTicketKeys-1))
	if err := noArgs(flags, args); err != nil {
		return err
	}
	if *out == "" {
		return badInvocation(errors.New("--out FILE is required"))
	}
	if *keep < 0 || *keep > tlsconfig.MaxTicketKeys-1 {
		return badInvocation(fmt.Errorf("--keep %d is outside 0..%d", *keep, tlsconfig.MaxTicketKeys-1))
	}
	key, err := tlsconfig.NewTicketKey()
	if err != nil {
		return err
	}
	keys := [][tlsconfig.TicketKeyBytes]byte{key}
	if *rotate {
		old, err := tlsconfig.LoadTicketKeys(*out)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%s does not exist: make it first, without --rotate", *out)
			}
			return err
		}
		keys = append(keys, old[:min(len(old), *keep)]...)
		if err := certs.WriteFile(*out, tlsconfig.FormatTicketKeys(keys), 0o600, true); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "rotated %s: a new key encrypts, %d old key(s) still decrypt, %d dropped (mode 0600)\n", *out, len(keys)-1, len(old)-(len(keys)-1))
		return nil
	}
	if _, err := os.Lstat(*out); err == nil {
		return badInvocation(fmt.Errorf("%s already exists: use --rotate to add a new key to it", *out))
	}
	if err := certs.WriteFile(*out, tlsconfig.FormatTicketKeys(keys), 0o600, false); err != nil {
		if errors.Is(err, certs.ErrExists) {
			return badInvocation(err)
		}
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: one session ticket key (mode 0600); set session_ticket_keys: %s on every replica\n", *out, *out)
	return nil
}
