//go:build linux

package testbed

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// realtimeThread moves the calling OS thread to SCHED_FIFO priority 10
// when allowed (root); otherwise it leaves it alone.
func realtimeThread() {
	attr := unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: 10}
	_ = unix.SchedSetAttr(0, &attr, 0)
}

// fineTimerSlack sets the calling thread's timer slack to 1 ns.
func fineTimerSlack() { _ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0) }

// nanosleep sleeps d nanoseconds with nanosleep(2), off the Go timer.
func nanosleep(d int64) {
	ts := unix.NsecToTimespec(d)
	_ = unix.Nanosleep(&ts, nil)
}

// dieWithParent makes a child process get SIGKILL when we die.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
