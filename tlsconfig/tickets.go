package tlsconfig

import (
	"bytes"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
)

// maxTicketMasters is how many master keys of the process's own are kept:
// the newest encrypts, the others still decrypt, so a ticket outlives one
// rotation.
const maxTicketMasters = 2

// MaxTicketKeys bounds the keys of a session ticket key file.
const MaxTicketKeys = 16

// TicketKeyBytes is the length of one session ticket key.
const TicketKeyBytes = 32

// TicketKeys holds session ticket master secrets: either the process's
// own (NewTicketKeys), which live as long as the process and rotate, or
// keys shared by every replica that reads the same file
// (SharedTicketKeys), so a session issued by one resumes on another. Either
// way they survive reloads, so clients keep resuming; each Policy's keys
// are derived from them and its name with HKDF, so a ticket issued under
// one Policy is unreadable under another.
type TicketKeys struct {
	mu      sync.Mutex
	masters [][TicketKeyBytes]byte
	shared  bool
}

// NewTicketKeys makes a keyring of the process's own with one random
// master secret.
func NewTicketKeys() (*TicketKeys, error) {
	k := &TicketKeys{}
	return k, k.Rotate()
}

// SharedTicketKeys makes a keyring from shared keys (see
// ParseTicketKeys): the first encrypts, all decrypt. It does not rotate:
// the file is rotated instead (aopguard certs ticket-keys --rotate).
func SharedTicketKeys(keys [][TicketKeyBytes]byte) (*TicketKeys, error) {
	if len(keys) == 0 || len(keys) > MaxTicketKeys {
		return nil, fmt.Errorf("tlsconfig: want 1 to %d session ticket keys, got %d", MaxTicketKeys, len(keys))
	}
	return &TicketKeys{masters: append([][TicketKeyBytes]byte(nil), keys...), shared: true}, nil
}

// Rotate adds a new master secret and forgets the oldest beyond the second.
// Rotating limits how long a stolen key decrypts recorded sessions. Shared
// keys are not rotated here.
func (k *TicketKeys) Rotate() error {
	if k.shared {
		return nil
	}
	m, err := NewTicketKey()
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.masters = append([][TicketKeyBytes]byte{m}, k.masters...)
	if len(k.masters) > maxTicketMasters {
		k.masters = k.masters[:maxTicketMasters]
	}
	return nil
}

// forPolicy derives the named Policy's keys, in the masters' order.
func (k *TicketKeys) forPolicy(name string) [][32]byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([][32]byte, len(k.masters))
	info := "aopguard session ticket key\x00" + normalize(name)
	for i, m := range k.masters {
		key, err := hkdf.Key(sha256.New, m[:], nil, info, 32)
		if err != nil {
			panic("tlsconfig: HKDF-SHA256 refused a 32-byte key: " + err.Error()) // not reachable: inputs are fixed-size
		}
		copy(out[i][:], key)
	}
	return out
}

// NewTicketKey returns a random session ticket key.
func NewTicketKey() ([TicketKeyBytes]byte, error) {
	var m [TicketKeyBytes]byte
	if _, err := rand.Read(m[:]); err != nil {
		return m, fmt.Errorf("tlsconfig: generating session ticket key: %w", err)
	}
	return m, nil
}

// ticketFileHeader opens every key file aopguard writes.
const ticketFileHeader = "# aopguard session ticket keys: one base64 key a line; the first encrypts new tickets,\n" +
	"# all of them decrypt. Secret: whoever holds them can decrypt recorded TLS 1.2 sessions\n" +
	"# and resume sessions. Rotate with: aopguard certs ticket-keys --out FILE --rotate\n"

// FormatTicketKeys renders keys as a key file: a comment, then one
// standard base64 key a line, the encrypting key first.
func FormatTicketKeys(keys [][TicketKeyBytes]byte) []byte {
	var b bytes.Buffer
	b.WriteString(ticketFileHeader)
	for _, k := range keys {
		b.WriteString(base64.StdEncoding.EncodeToString(k[:]))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// TicketKeyError is an error in a session ticket key file; it names the
// line, never the key's bytes.
type TicketKeyError struct {
	Line int // 0 for the file as a whole
	Err  error
}

func (e *TicketKeyError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %v", e.Line, e.Err)
	}
	return e.Err.Error()
}

func (e *TicketKeyError) Unwrap() error { return e.Err }

// ParseTicketKeys reads a key file: one standard base64 key of
// TicketKeyBytes bytes a line, the encrypting key first; blank lines and
// lines starting with # are ignored. Between 1 and MaxTicketKeys keys,
// none twice.
func ParseTicketKeys(data []byte) ([][TicketKeyBytes]byte, error) {
	var keys [][TicketKeyBytes]byte
	seen := map[[TicketKeyBytes]byte]int{}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(line)
		if err != nil || len(raw) != TicketKeyBytes {
			return nil, &TicketKeyError{Line: i + 1, Err: fmt.Errorf("not a base64 key of %d bytes (make one with aopguard certs ticket-keys)", TicketKeyBytes)}
		}
		var k [TicketKeyBytes]byte
		copy(k[:], raw)
		if j, dup := seen[k]; dup {
			return nil, &TicketKeyError{Line: i + 1, Err: fmt.Errorf("the same key as line %d", j)}
		}
		seen[k] = i + 1
		if keys = append(keys, k); len(keys) > MaxTicketKeys {
			return nil, &TicketKeyError{Line: i + 1, Err: fmt.Errorf("more than %d keys", MaxTicketKeys)}
		}
	}
	if len(keys) == 0 {
		return nil, &TicketKeyError{Err: errors.New("no session ticket keys in the file")}
	}
	return keys, nil
}

// LoadTicketKeys reads and parses a key file; errors name the file.
func LoadTicketKeys(path string) ([][TicketKeyBytes]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	keys, err := ParseTicketKeys(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return keys, nil
}

// CheckTicketKeysMode checks who else may read or write a session ticket
// key file. Whoever reads it can mint session tickets carrying any client
// chain for any policy (resumption takes the chain from the ticket, and
// per-policy keys derive from the file and the public policy name), so it
// is as sensitive as a client private key of every policy on every
// replica. A file other users may read or write is refused (err). One its
// group may read or write is allowed with a warning (warn): Kubernetes
// mounts a Secret's files with the Pod's fsGroup as group, so
// defaultMode 0440 is group-readable by design. On Windows, where these
// mode bits mean nothing, both are nil.
func CheckTicketKeysMode(path string) (warn, err error) {
	if runtime.GOOS == "windows" {
		return nil, nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	perm := fi.Mode().Perm()
	if perm&0o007 != 0 {
		return nil, fmt.Errorf("%s is open to other users (mode %04o): whoever reads it can mint session tickets for every policy; make it 0600 (or a Kubernetes Secret's defaultMode 0400 or 0440)", path, perm)
	}
	if perm&0o070 != 0 {
		return fmt.Errorf("%s is open to its group (mode %04o): every member can mint session tickets for every policy; fine for a Kubernetes Secret's fsGroup, otherwise make it 0600", path, perm), nil
	}
	return nil, nil
}
