package certs

import "io/fs"

// WriteFile writes data to name with mode perm: creating it exclusively
// (an existing file is ErrExists), or with replace atomically, through a
// temporary file renamed over it, so a reader never sees half a file.
func WriteFile(name string, data []byte, perm fs.FileMode, replace bool) error {
	return writeFile(name, data, perm, replace)
}
