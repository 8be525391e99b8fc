//go:build linux

package testbed_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/testbed"
	"github.com/sdnkvs/sdnkvs/bench/testbed/testbedtest"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

func TestServeControlAndDown(t *testing.T) {
	testenv.RequireRoot(t)
	cfg := testbed.Config{Name: testbed.NewRunID(), DCs: []testbed.DC{{Name: "sydney", Nodes: 2}, {Name: "dublin", Delay: 2 * time.Millisecond}}}
	t.Cleanup(func() { testbed.Down(cfg.Name, 5*time.Second) }) // on failure
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan *testbed.State, 1)
	done := make(chan error, 1)
	go func() { done <- testbed.Serve(ctx, cfg, func(st *testbed.State) { ready <- st }) }()
	var st *testbed.State
	select {
	case st = <-ready:
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Serve not ready")
	}
	if got, err := testbed.ReadState(cfg.Name); err != nil || got.PID != os.Getpid() || got.Namespaces["dublin"] != cfg.Name+"-dublin" {
		t.Fatalf("state file: %+v %v", got, err)
	}
	if n, err := testbed.ResolveName(cfg.Name); err != nil || n != cfg.Name {
		t.Fatalf("ResolveName: %q %v", n, err)
	}
	if _, err := testbed.Control(cfg.Name, "cut dublin"); err != nil {
		t.Fatal(err)
	}
	links, err := testbed.Links(cfg.Name)
	if err != nil {
		t.Fatal(err)
	}
	if len(links) != 2 || links[0].Cut || !links[1].Cut || links[1].Kind != "tun" {
		t.Fatalf("links after cut: %+v", links)
	}
	var b strings.Builder
	if err := testbed.WriteStatus(&b, st, links); err != nil || !strings.Contains(b.String(), "CUT") || !strings.Contains(b.String(), "10.210.1.11..10.210.1.12 (2)") {
		t.Fatalf("status text:\n%s", b.String())
	}
	if _, err := testbed.Control(cfg.Name, "heal dublin"); err != nil {
		t.Fatal(err)
	}
	if _, err := testbed.Control(cfg.Name, "cut paris"); err == nil || !strings.Contains(err.Error(), "unknown DC") {
		t.Fatalf("cut of unknown DC: %v", err)
	}
	if _, err := testbed.Control(cfg.Name, "explode"); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Fatalf("unknown command: %v", err)
	}
	if _, err := testbed.Control(cfg.Name, "down"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve returned %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Serve did not stop after down")
	}
	for _, p := range []string{testbed.StatePath(cfg.Name), testbed.SocketPath(cfg.Name)} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s left behind", p)
		}
	}
	if left := listNetns(t, cfg.Name+"-"); len(left) != 0 {
		t.Fatalf("namespaces left: %v", left)
	}
}

// TestCLIUpExecCutDown drives the real binary: up (detached supervisor),
// exec, cut, heal, status, down; and down after the supervisor was killed.
func TestCLIUpExecCutDown(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "ping")
	bin := testbedtest.BuildForTest(t)
	name := testbed.NewRunID()
	t.Cleanup(func() { testbed.Down(name, 5*time.Second) })
	run := func(args ...string) (string, error) {
		out, err := exec.Command(bin, args...).CombinedOutput()
		return string(out), err
	}
	out, err := run("testbed", "up", "--name", name, "--dc", "sydney,dublin", "--nodes", "2", "--delay", "dublin=3ms", "--rate", "dublin=200mbit")
	if err != nil {
		t.Fatalf("up: %v\n%s", err, out)
	}
	if !strings.Contains(out, "testbed "+name) || !strings.Contains(out, "200mbit") {
		t.Fatalf("up output:\n%s", out)
	}
	if out, err := run("testbed", "exec", "--name", name, "client", "--", "ping", "-c", "1", "-W", "2", "10.210.2.12"); err != nil {
		t.Fatalf("exec ping: %v\n%s", err, out)
	}
	if _, err := run("testbed", "cut", "--name", name, "dublin"); err != nil {
		t.Fatal(err)
	}
	if _, err := run("testbed", "exec", "--name", name, "client", "--", "ping", "-c", "1", "-W", "1", "10.210.2.12"); err == nil {
		t.Fatal("ping crossed a cut link")
	} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("exec did not pass ping's exit code 1 through: %v", err)
	}
	if out, _ := run("testbed", "status", "--name", name); !strings.Contains(out, "CUT") {
		t.Fatalf("status after cut:\n%s", out)
	}
	if out, err := run("testbed", "heal", "--name", name, "dublin"); err != nil {
		t.Fatalf("heal: %v\n%s", err, out)
	}
	if out, err := run("testbed", "down", "--name", name); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	if left := listNetns(t, name+"-"); len(left) != 0 {
		t.Fatalf("namespaces left after down: %v", left)
	}

	// A supervisor killed with SIGKILL cannot clean up: down still does.
	if out, err := run("testbed", "up", "--name", name, "--dc", "sydney", "--nodes", "1", "--delay", "1ms"); err != nil {
		t.Fatalf("second up: %v\n%s", err, out)
	}
	st, err := testbed.ReadState(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "supervisor gone", func() bool { return !testbed.PIDAlive(st.PID) })
	if out, err := run("testbed", "down", "--name", name); err != nil {
		t.Fatalf("down after kill: %v\n%s", err, out)
	}
	if left := listNetns(t, name+"-"); len(left) != 0 {
		t.Fatalf("namespaces left after down of a killed supervisor: %v", left)
	}
	if _, err := os.Stat(testbed.StatePath(name)); err == nil {
		t.Fatal("state file left")
	}
}
