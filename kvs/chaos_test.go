package kvs

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// sdnkvsBinary builds cmd/sdnkvs once per test process.
func sdnkvsBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kvs-chaos-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "sdnkvs")
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go") // set by go test
		}
		cmd := exec.Command(goBin, "build", "-o", binPath, "github.com/sdnkvs/sdnkvs/cmd/sdnkvs")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// procCluster is a cluster of `sdnkvs kvs node` processes.
type procCluster struct {
	t      *testing.T
	bin    string
	args   [][]string
	dirs   []string
	resp   []string
	mu     sync.Mutex
	procs  []*exec.Cmd
	paused []bool
}

func startProcCluster(t *testing.T, n int) *procCluster {
	bin := sdnkvsBinary(t)
	ports := freePorts(t, 3*n)
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("chaos-test-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var peers []string
	for i := 0; i < n; i++ {
		peers = append(peers, fmt.Sprintf("127.0.0.1:%d", ports[n+i]))
	}
	pc := &procCluster{t: t, bin: bin, procs: make([]*exec.Cmd, n), paused: make([]bool, n)}
	for i := 0; i < n; i++ {
		d := filepath.Join(dir, fmt.Sprintf("node%d", i+1))
		pc.dirs = append(pc.dirs, d)
		pc.resp = append(pc.resp, fmt.Sprintf("127.0.0.1:%d", ports[i]))
		pc.args = append(pc.args, []string{"kvs", "node", "--id", fmt.Sprint(i + 1), "--listen", pc.resp[i],
			"--peer-listen", peers[i], "--http", fmt.Sprintf("127.0.0.1:%d", ports[2*n+i]),
			"--peers", strings.Join(peers, ","), "--data", d, "--peer-secret-file", secret, "--timeout", "1s"})
	}
	for i := 0; i < n; i++ {
		pc.start(i)
	}
	t.Cleanup(pc.stopAll)
	for i := 0; i < n; i++ {
		pc.waitVoter(i)
	}
	return pc
}

func (pc *procCluster) start(i int) {
	cmd := exec.Command(pc.bin, pc.args[i]...)
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		pc.t.Fatal(err)
	}
	pc.mu.Lock()
	pc.procs[i], pc.paused[i] = cmd, false
	pc.mu.Unlock()
}

// kill sends SIGKILL to node i and reaps it.
func (pc *procCluster) kill(i int) {
	pc.mu.Lock()
	cmd := pc.procs[i]
	pc.procs[i] = nil
	pc.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
}

func (pc *procCluster) signal(i int, s syscall.Signal) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.procs[i] != nil {
		pc.procs[i].Process.Signal(s)
		pc.paused[i] = s == syscall.SIGSTOP
	}
}

func (pc *procCluster) stopAll() {
	for i := range pc.procs {
		pc.signal(i, syscall.SIGCONT)
		pc.kill(i)
	}
}

// info returns node i's INFO field, "" when unreachable.
func (pc *procCluster) info(i int, field string) string {
	c, err := net.DialTimeout("tcp", pc.resp[i], time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	c.Write([]byte("INFO\r\n"))
	rd := bufio.NewReader(c)
	if _, err := rd.ReadString('\n'); err != nil {
		return ""
	}
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			return ""
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
}

func (pc *procCluster) waitVoter(i int) {
	pc.t.Helper()
	testenv.WaitFor(pc.t, 60*time.Second, fmt.Sprintf("node %d votes", i+1), func() bool {
		return pc.info(i, "sdnkvs_state") == stateVoter
	})
}

// TestLinearizableChaos: five node processes, clients on every node, and
// one disruption at a time: kill -9 and restart, SIGSTOP for a while, or
// kill -9, wipe the data directory and restart. The history (failed writes
// recorded with an unknown outcome) must be linearizable: no acknowledged
// write is lost and no stale value is served.
func TestLinearizableChaos(t *testing.T) {
	pc := startProcCluster(t, 5)
	stop := make(chan struct{})
	h := runClientsAt(t, pc.resp, 3*time.Second, 8, 6, stop)
	r := rand.New(rand.NewPCG(7, 3))
	counts := map[string]int{}
	for round := 0; round < 9; round++ {
		waitOps(t, h, h.ok.Load()+300)
		i := r.IntN(len(pc.resp))
		switch action := []string{"kill", "pause", "wipe"}[round%3]; action {
		case "kill":
			pc.kill(i)
			pc.start(i)
		case "pause":
			pc.signal(i, syscall.SIGSTOP)
			time.Sleep(1500 * time.Millisecond) // the disruption itself, not a wait for a condition
			pc.signal(i, syscall.SIGCONT)
		case "wipe":
			pc.kill(i)
			if err := os.RemoveAll(pc.dirs[i]); err != nil {
				t.Fatal(err)
			}
			pc.start(i)
		}
		counts[[]string{"kill", "pause", "wipe"}[round%3]]++
		pc.waitVoter(i) // one disrupted node at a time: a wiped one is repaired first
	}
	waitOps(t, h, h.ok.Load()+300)
	close(stop)
	t.Logf("disruptions: %v", counts)
	checkLinearizable(t, waitDone(t, h))
}
