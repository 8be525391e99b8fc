package script

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// recorder is a testing.TB that records failures instead of failing.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
	runtime.Goexit()
}

// inGoroutine runs fn where Fatalf may end it.
func inGoroutine(fn func()) {
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	<-done
}

// echo answers every command with its name and sorted arguments.
func echo(c *Cmd) []string {
	r := []string{"name=" + c.Name}
	for _, p := range c.Pos {
		r = append(r, "pos="+p)
	}
	if v, ok := c.Arg("k"); ok {
		r = append(r, "k="+v)
	}
	return r
}

const script = `# comment kept
cmd a k=v
----
name=cmd
pos=a
k=v

other
----
name=other
`

func TestRunMatches(t *testing.T) {
	r := &recorder{TB: t}
	out, err := run(r, "x.txt", script, echo, true)
	if err != nil || len(r.errs) != 0 {
		t.Fatalf("run: %v, failures %q", err, r.errs)
	}
	if out != script {
		t.Fatalf("output differs from a script that matched:\n%s", out)
	}
}

func TestRunReportsMismatchAndRewrites(t *testing.T) {
	bad := strings.Replace(script, "k=v\n\n", "k=WRONG\n\n", 1)
	r := &recorder{TB: t}
	out, err := run(r, "x.txt", bad, echo, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.errs) != 1 || !strings.Contains(r.errs[0], "x.txt:2: cmd a k=v") {
		t.Fatalf("want one mismatch at x.txt:2, got %q", r.errs)
	}
	if out != script {
		t.Fatalf("rewritten output is not the produced one:\n%s", out)
	}
}

func TestRunRejectsMissingSeparator(t *testing.T) {
	_, err := run(&recorder{TB: t}, "x.txt", "cmd\nnot a separator\n", echo, true)
	if err == nil || !strings.Contains(err.Error(), "x.txt:1") {
		t.Fatalf("err = %v, want a ---- error at line 1", err)
	}
}

func TestCmdArguments(t *testing.T) {
	c := Parse("flow n=3 lag=5s fin")
	c.T = t
	if c.Name != "flow" || !c.Has("fin") || c.Has("rst") || c.Int("n", 0) != 3 || c.Int("min", 7) != 7 ||
		c.Duration("lag", 0) != 5*time.Second || c.Duration("linger", time.Second) != time.Second {
		t.Fatalf("parsed %+v wrongly", c)
	}
	for _, bad := range []string{"x n=three", "x lag=5 parsecs"} {
		r := &recorder{TB: t}
		c := Parse(bad)
		c.T, c.File, c.Line = r, "y.txt", 9
		inGoroutine(func() { c.Int("n", 0); c.Duration("lag", 0) })
		if len(r.errs) != 1 || !strings.HasPrefix(r.errs[0], "y.txt:9: "+bad) {
			t.Errorf("%q: failures %q, want one naming y.txt:9", bad, r.errs)
		}
	}
}

func TestRunFileRewrite(t *testing.T) {
	file := filepath.Join(t.TempDir(), "s.txt")
	if err := os.WriteFile(file, []byte(strings.Replace(script, "pos=a\n", "", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	*Rewrite = true
	defer func() { *Rewrite = false }()
	Run(t, file, echo)
	b, err := os.ReadFile(file)
	if err != nil || string(b) != script {
		t.Fatalf("rewritten file:\n%s (%v)", b, err)
	}
}
