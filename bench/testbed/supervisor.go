//go:build linux

package testbed

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// StateDir holds, per CLI testbed NAME, NAME.json (the [State]), NAME.sock
// (the supervisor's control socket) and NAME.log (its output).
const StateDir = "/run/sdnkvs/testbed"

// State is what a supervisor records about its running testbed.
type State struct {
	Name       string            `json:"name"`
	PID        int               `json:"pid"` // the supervisor
	Socket     string            `json:"socket"`
	Log        string            `json:"log,omitempty"`
	Namespaces map[string]string `json:"namespaces"` // role -> netns name
	Config     Config            `json:"config"`
	Started    time.Time         `json:"started"`
}

// StatePath is the state file of testbed name.
func StatePath(name string) string { return filepath.Join(StateDir, name+".json") }

// SocketPath is the control socket of testbed name.
func SocketPath(name string) string { return filepath.Join(StateDir, name+".sock") }

// LogPath is the supervisor log of testbed name.
func LogPath(name string) string { return filepath.Join(StateDir, name+".log") }

// ReadState reads testbed name's state file.
func ReadState(name string) (*State, error) {
	b, err := os.ReadFile(StatePath(name))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no testbed named %q (no %s)", name, StatePath(name))
		}
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("state file %s: %w", StatePath(name), err)
	}
	return &st, nil
}

// ListStates returns the names of the testbeds with a state file.
func ListStates() ([]string, error) {
	ents, err := os.ReadDir(StateDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names, nil
}

// ResolveName returns name, or when it is empty the only running testbed.
func ResolveName(name string) (string, error) {
	if name != "" {
		return name, nil
	}
	names, err := ListStates()
	if err != nil {
		return "", err
	}
	switch len(names) {
	case 0:
		return "", errors.New("no testbed is up (sdnkvs testbed up)")
	case 1:
		return names[0], nil
	}
	return "", fmt.Errorf("several testbeds are up (%s): choose one with --name", strings.Join(names, ", "))
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Serve builds the topology and supervises it: it writes the state file,
// answers the control socket (cut DC, heal DC, status, down) and runs the
// delay lines until ctx ends or a client sends "down"; then it tears
// everything down and removes its files. ready, if not nil, is called once
// the testbed is up.
func Serve(ctx context.Context, cfg Config, ready func(*State)) error {
	if cfg.Name == "" {
		cfg.Name = NewRunID()
	}
	if err := os.MkdirAll(StateDir, 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(StatePath(cfg.Name)); err == nil {
		return fmt.Errorf("testbed %s already has a state file %s (down it first)", cfg.Name, StatePath(cfg.Name))
	}
	tb, err := Up(cfg)
	if err != nil {
		return err
	}
	defer tb.Close()
	sock := SocketPath(cfg.Name)
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	defer os.Remove(sock)
	defer ln.Close()
	st := &State{
		Name: cfg.Name, PID: os.Getpid(), Socket: sock, Log: LogPath(cfg.Name),
		Namespaces: tb.Namespaces(), Config: tb.Config(), Started: time.Now().UTC(),
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	if err := writeFileAtomic(StatePath(cfg.Name), b); err != nil {
		return err
	}
	defer os.Remove(StatePath(cfg.Name))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	errc := make(chan error, 1)
	go func() { errc <- acceptLoop(ctx, ln, tb, cancel) }()
	if ready != nil {
		ready(st) // the control socket already answers
	}
	return <-errc
}

func acceptLoop(ctx context.Context, ln net.Listener, tb *Testbed, stop func()) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			stop()
			return fmt.Errorf("control socket: %w", err)
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			line, err := bufio.NewReader(io.LimitReader(c, 4096)).ReadString('\n')
			if err != nil && line == "" {
				return
			}
			reply, down := handleControl(tb, strings.TrimSpace(line))
			io.WriteString(c, reply)
			if down {
				stop()
			}
		}()
	}
}

// handleControl answers one control command.
func handleControl(tb *Testbed, line string) (reply string, stop bool) {
	verb, arg, _ := strings.Cut(line, " ")
	switch verb {
	case "cut", "heal":
		f := tb.Cut
		if verb == "heal" {
			f = tb.Heal
		}
		if err := f(strings.TrimSpace(arg)); err != nil {
			return "error: " + err.Error() + "\n", false
		}
		return "ok\n", false
	case "status":
		b, _ := json.Marshal(tb.Links())
		return "ok\n" + string(b) + "\n", false
	case "down":
		return "ok\n", true
	}
	return fmt.Sprintf("error: unknown command %q (want cut DC, heal DC, status, down)\n", line), false
}

// Control sends one command to testbed name's supervisor and returns the
// payload after its "ok" line, or the supervisor's error.
func Control(name, cmd string) (string, error) {
	c, err := net.DialTimeout("unix", SocketPath(name), 3*time.Second)
	if err != nil {
		return "", fmt.Errorf("testbed %s supervisor not answering: %w", name, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	head, rest, _ := strings.Cut(string(b), "\n")
	if head == "ok" {
		return rest, nil
	}
	if msg, ok := strings.CutPrefix(head, "error: "); ok {
		return "", errors.New(msg)
	}
	return "", fmt.Errorf("testbed %s: unexpected reply %q", name, b)
}

// Links asks testbed name's supervisor for its links.
func Links(name string) ([]LinkStatus, error) {
	out, err := Control(name, "status")
	if err != nil {
		return nil, err
	}
	var ls []LinkStatus
	if err := json.Unmarshal([]byte(out), &ls); err != nil {
		return nil, fmt.Errorf("status reply: %w", err)
	}
	return ls, nil
}

// Detach starts a supervisor (argv, e.g. the sdnkvs binary with "testbed
// serve" and the topology flags) in its own session with output to
// [LogPath], and waits until it has written the state file of testbed
// name, or has died (the error then carries its log).
func Detach(argv []string, name string, timeout time.Duration) (*State, error) {
	if err := os.MkdirAll(StateDir, 0o755); err != nil {
		return nil, err
	}
	if _, err := os.Stat(StatePath(name)); err == nil {
		return nil, fmt.Errorf("testbed %s is already up (state file %s)", name, StatePath(name))
	}
	logf, err := os.Create(LogPath(name))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start supervisor: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(timeout)
	for {
		if st, err := ReadState(name); err == nil && st.PID == cmd.Process.Pid {
			return st, nil
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(LogPath(name))
			return nil, fmt.Errorf("supervisor exited (%v):\n%s", err, tail(string(b), 3000))
		case <-deadline:
			_ = cmd.Process.Kill()
			<-exited
			b, _ := os.ReadFile(LogPath(name))
			return nil, fmt.Errorf("supervisor not ready after %v:\n%s", timeout, tail(string(b), 3000))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// pidAlive reports whether pid exists and is not a zombie.
func pidAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// Field 3 (after "(comm)") is the state.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// isSupervisor reports whether pid still runs a testbed supervisor (so a
// recycled PID is never signalled).
func isSupervisor(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && strings.Contains(string(b), "testbed\x00serve")
}

// Down stops testbed name: it asks the supervisor to tear down and waits for
// it to exit; if the supervisor does not answer it is sent SIGTERM, then
// SIGKILL, by its recorded PID; namespaces it left behind are deleted and
// its files removed.
func Down(name string, timeout time.Duration) error {
	st, err := ReadState(name)
	if err != nil {
		return err
	}
	wait := func(d time.Duration) bool {
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			if !pidAlive(st.PID) {
				return true
			}
			time.Sleep(20 * time.Millisecond)
		}
		return !pidAlive(st.PID)
	}
	if _, err := Control(name, "down"); err != nil || !wait(timeout) {
		if isSupervisor(st.PID) {
			_ = syscall.Kill(st.PID, syscall.SIGTERM)
			if !wait(timeout) {
				_ = syscall.Kill(st.PID, syscall.SIGKILL)
				wait(5 * time.Second)
			}
		}
	}
	var first error
	for _, ns := range st.Namespaces {
		if netnsExists(ns) {
			if err := runIP("netns", "del", ns); err != nil && first == nil {
				first = err
			}
		}
	}
	for _, p := range []string{StatePath(name), SocketPath(name), LogPath(name)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) && first == nil {
			first = err
		}
	}
	return first
}

// ExecIn runs argv in testbed name's namespace role with the caller's
// stdio, returning the command's exit error.
func ExecIn(name, role string, argv []string) error {
	st, err := ReadState(name)
	if err != nil {
		return err
	}
	ns, ok := st.Namespaces[role]
	if !ok {
		var roles []string
		for r := range st.Namespaces {
			roles = append(roles, r)
		}
		sort.Strings(roles)
		return fmt.Errorf("testbed %s has no namespace %q (have: %s)", name, role, strings.Join(roles, ", "))
	}
	if len(argv) == 0 {
		return errors.New("exec: no command given (sdnkvs testbed exec NS -- cmd args)")
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	return cmd.Run()
}
