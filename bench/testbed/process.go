//go:build linux

package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// maxOutput bounds the output a Process keeps (the most recent bytes).
const maxOutput = 1 << 20

// Process is a command started by [Testbed.Start] in a namespace or by
// [StartProcess]. Its
// combined stdout and stderr are kept (the last MiB) and can be waited on
// line by line. Stop kills it by PID. Safe for concurrent use.
type Process struct {
	Name string // what was run, for messages
	cmd  *exec.Cmd

	mu      sync.Mutex
	out     []byte
	changed chan struct{} // closed and replaced on every write
	exited  chan struct{}
	waitErr error
}

// StartProcess starts argv in namespace ns ("": this process's own) and
// returns its handle; the caller stops it. env entries ("K=V") are added
// to this process's environment.
func StartProcess(ns string, argv []string, env ...string) (*Process, error) {
	if len(argv) == 0 {
		return nil, errors.New("start: empty command")
	}
	name := strings.Join(argv, " ")
	cmd := exec.Command(argv[0], argv[1:]...)
	if ns != "" {
		name = ns + ": " + name
		cmd = exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	}
	cmd.Env = append(os.Environ(), env...)
	p := &Process{
		Name:    name,
		cmd:     cmd,
		changed: make(chan struct{}),
		exited:  make(chan struct{}),
	}
	cmd.Stdout, cmd.Stderr = p, p
	// ip netns exec execs the command in place, so the PID is the
	// command's, and it dies with us if we die.
	cmd.SysProcAttr = dieWithParent()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", p.Name, err)
	}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(p.exited)
	}()
	return p, nil
}

// Write records output; it implements io.Writer for the command's pipes.
func (p *Process) Write(b []byte) (int, error) {
	p.mu.Lock()
	p.out = append(p.out, b...)
	if len(p.out) > maxOutput {
		p.out = append(p.out[:0], p.out[len(p.out)-maxOutput/2:]...)
	}
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	return len(b), nil
}

// PID is the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Output returns the combined output kept so far.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return string(p.out)
}

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err is the exit error (nil before exit or on success).
func (p *Process) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// WaitOutput waits until the output contains substr, the process exits, or
// ctx ends. It returns an error with the output's tail in the last two cases.
func (p *Process) WaitOutput(ctx context.Context, substr string) error {
	for {
		p.mu.Lock()
		found := bytes.Contains(p.out, []byte(substr))
		ch := p.changed
		p.mu.Unlock()
		if found {
			return nil
		}
		select {
		case <-ch:
		case <-p.exited:
			if strings.Contains(p.Output(), substr) {
				return nil
			}
			return fmt.Errorf("%s exited (%v) before printing %q; output:\n%s", p.Name, p.Err(), substr, tail(p.Output(), 2000))
		case <-ctx.Done():
			return fmt.Errorf("%s: waiting for %q: %w; output:\n%s", p.Name, substr, ctx.Err(), tail(p.Output(), 2000))
		}
	}
}

// Wait waits for the process to exit, up to ctx.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.exited:
		return p.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop sends SIGTERM to the process (by PID), waits up to grace, then
// sends SIGKILL and waits for it to exit. Stopping an exited process is a
// no-op.
func (p *Process) Stop(grace time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
