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
// not inherit the namespace. If switching back fails, the calling
// goroutine stays locked to that thread (the runtime discards the thread
// when the goroutine exits, instead of reusing it in the wrong namespace).
// Safe for concurrent use.
func InNetns(nsPath string, fn func() error) error {
	target, err := os.Open(nsPath)
	if err != nil {
		return fmt.Errorf("netstackio: open netns: %w", err)
	}
	defer target.Close()

	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netstackio: open current netns: %w", err)
	}
	defer orig.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netstackio: setns %s: %w", nsPath, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Keep the thread locked: it dies with this goroutine.
		return fmt.Errorf("netstackio: setns back from %s: %w", nsPath, err)
	}
	runtime.UnlockOSThread()
	return ferr
}
