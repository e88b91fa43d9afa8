package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// commandFlags is the flag set of one command ("aopguard run", "aopguard
// certs ca"). -h and --help write the command's usage and flags to stdout
// (and the command exits 0); a bad flag is returned as an invocation error
// that points to -h, and the flag package itself prints nothing.
type commandFlags struct {
	*flag.FlagSet
	usage  string
	stdout io.Writer
}

// newCommandFlags returns the flag set of the command name ("aopguard
// run"); usage is the text before the list of flags.
func newCommandFlags(name, usage string, stdout io.Writer) *commandFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &commandFlags{FlagSet: fs, usage: usage, stdout: stdout}
}

// Parse parses args. On -h or --help it writes the help to stdout and
// returns flag.ErrHelp; any other error is an invocation error (exit 2).
func (c *commandFlags) Parse(args []string) error {
	err := c.FlagSet.Parse(args)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		c.writeHelp(c.stdout)
		return err
	}
	return &exitError{exitConfig, fmt.Errorf("%w (\"%s -h\" lists the flags)", err, c.Name())}
}

// writeHelp writes the usage text and every flag, "--name PLACEHOLDER"
// and what it does, with its default when it has one.
func (c *commandFlags) writeHelp(w io.Writer) {
	io.WriteString(w, c.usage)
	c.VisitAll(func(f *flag.Flag) {
		placeholder, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if placeholder != "" {
			line += " " + placeholder
		}
		fmt.Fprintf(w, "%s\n      %s", line, strings.ReplaceAll(usage, "\n", "\n      "))
		switch f.DefValue {
		case "", "false", "0", "[]":
		default:
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		io.WriteString(w, "\n")
	})
}

// isHelp reports whether err is the answer to -h or --help: the help is
// already written, and the command exits 0.
func isHelp(err error) bool { return errors.Is(err, flag.ErrHelp) }
