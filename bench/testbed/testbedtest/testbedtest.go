//go:build linux

// Package testbedtest holds the test helpers of package testbed: a
// topology torn down with the test, and the sdnkvs binary built for tests.
// Only tests import it, so the shipped binary does not link package
// testing.
package testbedtest

import (
	"io"
	"os"
	"sync"
	"testing"

	"github.com/sdnkvs/sdnkvs/bench/testbed"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

// ForTest builds the topology for a test and tears it down in t.Cleanup
// (also when the test fails). It needs root: call testenv.RequireRoot first.
func ForTest(t testing.TB, cfg testbed.Config) *testbed.Testbed {
	t.Helper()
	tb, err := testbed.Up(cfg)
	if err != nil {
		t.Fatalf("testbed up: %v", err)
	}
	t.Cleanup(func() {
		if err := tb.Close(); err != nil {
			t.Errorf("testbed close: %v", err)
		}
	})
	return tb
}

// BuildForTest builds the sdnkvs binary into a test temp dir. When the
// build fails it fails the test under CI (the tree must build there) and
// skips it otherwise (someone else's package may be mid-edit).
func BuildForTest(t testing.TB) string {
	t.Helper()
	bin, err := testbed.BuildBinary(t.TempDir())
	if err != nil {
		failOrSkip(t, err)
	}
	return bin
}

// shared is the binary SharedBinary builds once per test process.
var shared struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// SharedBinary builds the sdnkvs binary once per test process (for
// packages whose tests all run it) and returns its path; a failed build
// fails the test under CI and skips it otherwise. Call RemoveSharedBinary
// from TestMain after m.Run.
func SharedBinary(t testing.TB) string {
	t.Helper()
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "sdnkvs-test-")
		if shared.err == nil {
			shared.path, shared.err = testbed.BuildBinary(shared.dir)
		}
	})
	if shared.err != nil {
		failOrSkip(t, shared.err)
	}
	return shared.path
}

// RemoveSharedBinary deletes what SharedBinary built.
func RemoveSharedBinary() {
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
}

func failOrSkip(t testing.TB, err error) {
	t.Helper()
	if testenv.InCI() {
		t.Fatal(err)
	}
	t.Skipf("skipping: %v", err)
}

// Main runs the tests of a package that uses SharedBinary and then removes
// the binary: call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	RemoveSharedBinary()
	os.Exit(code)
}

// Log returns a writer that sends each write to t.Logf, for the progress
// output of a run under test.
func Log(t testing.TB) io.Writer { return logWriter{t} }

type logWriter struct{ t testing.TB }

func (l logWriter) Write(b []byte) (int, error) { l.t.Logf("%s", b); return len(b), nil }
