package netstackio

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// InNetns runs fn on a thread switched into the network namespace at
// nsPath (e.g. /run/netns/NAME) and switches back afterwards. Sockets,
// TUN devices and interfaces fn creates stay in that namespace for their
// whole life, whichever thread later uses them; goroutines fn starts do
// not inherit the namespace. fn runs on a goroutine of its own, locked to
// its thread: if switching back fails, that goroutine exits still locked
// and the runtime discards the thread instead of reusing it in the wrong
// namespace. Safe for concurrent use.
func InNetns(nsPath string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netstackio: open current netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open(nsPath)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netstackio: open netns: %w", err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netstackio: setns %s: %w", nsPath, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			errc <- fmt.Errorf("netstackio: setns back from %s: %w", nsPath, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
