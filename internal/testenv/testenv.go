// Package testenv holds helpers shared by tests: root checks and waiting on
// conditions with deadlines (tests never sleep to wait).
package testenv

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// InCI reports whether the tests run under CI (CI=true), where tests that
// need root and network namespaces must run rather than skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// RequireRoot skips t with a clear message when not root, except under CI
// where it fails: namespace tests must run there.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if InCI() {
		t.Fatalf("this test needs root and network namespaces; CI=true so it must run")
	}
	t.Skip("skipping: needs root and network namespaces (run as root, or with CI=true as root)")
}

// RequireCommand skips (or fails under CI) when a program is not installed.
func RequireCommand(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if InCI() {
				t.Fatalf("%s is not installed; .ci/run must install it", n)
			}
			t.Skipf("skipping: %s is not installed", n)
		}
	}
}

// WaitFor polls cond every 5 ms until it returns true or the deadline
// passes, then fails t with msg.
func WaitFor(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// RedisPy returns a Python interpreter that can import redis-py (Debian's
// python3-redis, installed by scripts/install-deps.sh): python3 on PATH
// first, then /usr/bin/python3 (a PATH python3 may be another install that
// lacks Debian's packages). It skips t when there is none, or fails it
// under CI.
func RedisPy(t testing.TB) string {
	t.Helper()
	for _, py := range []string{"python3", "/usr/bin/python3"} {
		if exec.Command(py, "-c", "import redis").Run() == nil {
			return py
		}
	}
	if InCI() {
		t.Fatalf("no python3 imports redis (redis-py); .ci/run must install python3-redis")
	}
	t.Skip("skipping: redis-py (python3-redis) is not installed")
	return ""
}
