// Package script runs data-driven test scripts, in the manner of etcd
// raft's and cockroachdb's datadriven files: a script is a text file of
// commands, each followed by a line "----" and the output it must produce
// (up to the next blank line). Blank lines and lines starting with # are
// comments, kept as they are. `go test -rewrite` writes the output the
// code produces back into the files instead of comparing.
//
//	# a comment
//	flow n=3 min=2
//	----
//
//	client seq=0 data=hello fin
//	----
//	-> b0 ACK|FIN seq=0 ack=0 wnd=502 data="hello"
//
// A command line is a name followed by words: key=value arguments (Cmd.Int,
// Cmd.Duration, Cmd.Arg) and plain words (Cmd.Pos, Cmd.Has). Both pure cores
// (ackmerge, failover) describe their rules this way.
package script

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Rewrite makes Run write the produced output into the script files.
var Rewrite = flag.Bool("rewrite", false, "rewrite the expected output of data-driven test scripts (testdata/*.txt)")

// Cmd is one command of a script.
type Cmd struct {
	T    testing.TB
	File string // script file
	Line int    // line number of the command (1-based)
	Text string // the command line as written
	Name string // its first word
	Pos  []string
	Args map[string]string
}

// Fatalf fails the test with the command's file, line and text in front.
func (c *Cmd) Fatalf(format string, args ...any) {
	c.T.Helper()
	c.T.Fatalf("%s:%d: %s: %s", c.File, c.Line, c.Text, fmt.Sprintf(format, args...))
}

// Has reports whether the plain word w is among the arguments.
func (c *Cmd) Has(w string) bool {
	for _, p := range c.Pos {
		if p == w {
			return true
		}
	}
	return false
}

// Arg returns the value of key=value and whether it was given.
func (c *Cmd) Arg(key string) (string, bool) {
	v, ok := c.Args[key]
	return v, ok
}

// Int returns the integer argument key, or def when absent; a value that is
// not an integer fails the test.
func (c *Cmd) Int(key string, def int) int {
	c.T.Helper()
	v, ok := c.Args[key]
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		c.Fatalf("bad %s=%s: %v", key, v, err)
	}
	return n
}

// Duration returns the duration argument key (time.ParseDuration syntax),
// or def when absent; a malformed value fails the test.
func (c *Cmd) Duration(key string, def time.Duration) time.Duration {
	c.T.Helper()
	v, ok := c.Args[key]
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		c.Fatalf("bad %s=%s: %v", key, v, err)
	}
	return d
}

// Parse splits a command line into a Cmd (T, File and Line left unset).
func Parse(line string) Cmd {
	f := strings.Fields(line)
	c := Cmd{Text: line, Args: map[string]string{}}
	if len(f) == 0 {
		return c
	}
	c.Name = f[0]
	for _, a := range f[1:] {
		if k, v, ok := strings.Cut(a, "="); ok {
			c.Args[k] = v
		} else {
			c.Pos = append(c.Pos, a)
		}
	}
	return c
}

// RunDir runs every script matching pattern (e.g. "testdata/*.txt") as a
// subtest named after its file, with the command function newFn returns for
// that file (so each file starts from fresh state). It fails if none
// matches.
func RunDir(t *testing.T, pattern string, newFn func() func(c *Cmd) []string) {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts match %s: %v", pattern, err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) { Run(t, file, newFn()) })
	}
}

// Run runs the script in file: fn executes each command and returns its
// output lines, which must equal the expected ones (each mismatch is
// reported; the script goes on). With -rewrite, the file is rewritten with
// the output instead.
func Run(t testing.TB, file string, fn func(c *Cmd) []string) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	out, err := run(t, file, string(raw), fn, !*Rewrite)
	if err != nil {
		t.Fatal(err)
	}
	if *Rewrite {
		if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// run executes the script text and returns it with the produced output in
// place of the expected one; compare reports mismatches to t.
func run(t testing.TB, file, text string, fn func(c *Cmd) []string, compare bool) (string, error) {
	t.Helper()
	lines := strings.Split(text, "\n")
	var out strings.Builder
	for i := 0; i < len(lines); {
		line := lines[i]
		i++
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			out.WriteString(line + "\n")
			continue
		}
		cmdLine := i
		if i >= len(lines) || lines[i] != "----" {
			return "", fmt.Errorf("%s:%d: command without a ---- line after it: %q", file, cmdLine, line)
		}
		i++
		var want []string
		for i < len(lines) && lines[i] != "" {
			want = append(want, lines[i])
			i++
		}
		c := Parse(line)
		c.T, c.File, c.Line = t, file, cmdLine
		got := fn(&c)
		out.WriteString(line + "\n----\n")
		for _, g := range got {
			out.WriteString(g + "\n")
		}
		if compare && strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s:%d: %s\n got:\n%s\nwant:\n%s", file, cmdLine, line, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	return strings.TrimRight(out.String(), "\n") + "\n", nil
}
