// Command kvsfigures measures issue 10's targets black-box against an
// sdnkvs binary (so the same run can measure the code before and after):
//
//	go run ./internal/kvsfigures -bin BEFORE -runs 20 > before.txt
//	go run ./internal/kvsfigures -bin AFTER -runs 20 > after.txt
//
// wipe: 3 nodes, quorum 2. 200 keys written as v1, node 3 killed, the keys
// rewritten as v2 (acknowledged by nodes 1 and 2), node 3 restarted (it
// holds v1), node 2's disk wiped (even runs) or 64 bytes of every SST
// flipped (odd runs) and node 2 restarted; once node 2 reports ready, node 1
// is killed and every key is read through nodes 2 and 3: a value other than
// v2 is an acknowledged write lost.
//
// abuse: victims (4 clients, GET/SET) on node 1 alone, then while one client
// runs each abuse pattern of the issue; victims' ops/s and the largest RSS of
// any node process are reported.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	bin     = flag.String("bin", "", "sdnkvs binary")
	runs    = flag.Int("runs", 20, "wipe/corrupt runs")
	phase   = flag.Duration("phase", 8*time.Second, "duration of each abuse phase")
	what    = flag.String("what", "wipe,abuse", "measurements")
	only    = flag.String("patterns", "", "abuse patterns to run (comma-separated names; default all)")
	secured bool
)

type cluster struct {
	dir   string
	args  [][]string
	resp  []string
	http  []string
	procs []*exec.Cmd
}

func freePorts(n int) []int {
	var ls []net.Listener
	var ps []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		ls = append(ls, l)
		ps = append(ps, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ps
}

func newCluster(n int) *cluster {
	dir, _ := os.MkdirTemp("", "kvsfig-")
	ports := freePorts(3 * n)
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("figures-secret-0123456789\n"), 0o600)
	var peers []string
	for i := 0; i < n; i++ {
		peers = append(peers, fmt.Sprintf("127.0.0.1:%d", ports[n+i]))
	}
	c := &cluster{dir: dir, procs: make([]*exec.Cmd, n)}
	for i := 0; i < n; i++ {
		c.resp = append(c.resp, fmt.Sprintf("127.0.0.1:%d", ports[i]))
		c.http = append(c.http, fmt.Sprintf("127.0.0.1:%d", ports[2*n+i]))
		a := []string{"kvs", "--id", strconv.Itoa(i + 1), "--listen", c.resp[i], "--peer-listen", peers[i],
			"--http", c.http[i], "--peers", strings.Join(peers, ","), "--data", filepath.Join(dir, fmt.Sprintf("node%d", i+1))}
		if secured {
			a = append(a, "--peer-secret-file", secret)
		}
		c.args = append(c.args, a)
	}
	for i := range c.args {
		c.start(i)
	}
	for i := range c.args {
		c.waitReady(i, 30*time.Second)
	}
	return c
}

func (c *cluster) start(i int) {
	cmd := exec.Command(*bin, c.args[i]...)
	if err := cmd.Start(); err != nil {
		panic(err)
	}
	c.procs[i] = cmd
}

func (c *cluster) kill(i int, sig syscall.Signal) {
	if p := c.procs[i]; p != nil {
		p.Process.Signal(sig)
		p.Wait()
		c.procs[i] = nil
	}
}

func (c *cluster) close() {
	for i := range c.procs {
		c.kill(i, syscall.SIGKILL)
	}
	os.RemoveAll(c.dir)
}

func (c *cluster) ready(i int) bool {
	r, err := http.Get("http://" + c.http[i] + "/ready")
	if err != nil {
		return false
	}
	r.Body.Close()
	return r.StatusCode == 200
}

func (c *cluster) waitReady(i int, d time.Duration) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if c.ready(i) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func client(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 5 * time.Second, PoolSize: 8})
}

var ctx = context.Background()

// writeAll writes every key, retrying failed writes for up to 10s (a
// node that just restarted may still be connecting to its peers).
func writeAll(rc *redis.Client, n int, v string) error {
	var err error
	for try := 0; try < 100; try++ {
		p := rc.Pipeline()
		for k := 0; k < n; k++ {
			p.Set(ctx, fmt.Sprintf("key-%03d", k), v+strings.Repeat("x", 100), 0)
		}
		if _, err = p.Exec(ctx); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

func flipSSTs(dir string) int {
	m, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	for _, p := range m {
		b, _ := os.ReadFile(p)
		for i := len(b) / 3; i < len(b)/3+64 && i < len(b); i++ {
			b[i] ^= 0xff
		}
		os.WriteFile(p, b, 0o644)
	}
	return len(m)
}

func wipeRuns() {
	const keys = 200
	total, totalErr := 0, 0
	for run := 0; run < *runs; run++ {
		c := newCluster(3)
		rc1 := client(c.resp[0])
		must(writeAll(rc1, keys, "v1"))
		c.kill(2, syscall.SIGKILL)
		must(writeAll(rc1, keys, "v2"))
		c.start(2)
		c.waitReady(2, 20*time.Second)
		how := "wipe"
		if run%2 == 0 {
			c.kill(1, syscall.SIGKILL)
			os.RemoveAll(filepath.Join(c.dir, "node2"))
		} else {
			how = "corrupt"
			c.kill(1, syscall.SIGTERM)
			if flipSSTs(filepath.Join(c.dir, "node2")) == 0 {
				how = "corrupt(no sst)"
			}
		}
		c.start(1)
		readyIn := -1.0
		t0 := time.Now()
		if c.waitReady(1, 20*time.Second) {
			readyIn = time.Since(t0).Seconds()
		}
		c.kill(0, syscall.SIGKILL)
		c.waitReady(2, 5*time.Second)
		lost, errs := 0, 0
		for k := 0; k < keys; k++ {
			rc := client(c.resp[1+k%2])
			v, err := rc.Get(ctx, fmt.Sprintf("key-%03d", k)).Result()
			rc.Close()
			switch {
			case errors.Is(err, redis.Nil):
				lost++
			case err != nil:
				errs++
			case !strings.HasPrefix(v, "v2"):
				lost++
			}
		}
		fmt.Printf("run %2d %-16s node2 ready after %5.2fs: %3d of %d acknowledged writes lost, %d reads failed\n", run+1, how, readyIn, lost, keys, errs)
		total += lost
		totalErr += errs
		rc1.Close()
		c.close()
	}
	fmt.Printf("wipe/corrupt total over %d runs: %d acknowledged writes lost, %d reads failed\n", *runs, total, totalErr)
}

func rssMiB(p *exec.Cmd) float64 {
	if p == nil {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Process.Pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// victims runs GET/SET clients on addr for d and returns their ops/s.
func victims(addr string, d time.Duration) float64 {
	var ops atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc := client(addr)
			defer rc.Close()
			for i := 0; time.Now().Before(end); i++ {
				k := fmt.Sprintf("victim-%d-%d", w, i%100)
				var err error
				if i%2 == 0 {
					err = rc.Set(ctx, k, "v", 0).Err()
				} else {
					err = rc.Get(ctx, k).Err()
					if errors.Is(err, redis.Nil) {
						err = nil
					}
				}
				if err == nil {
					ops.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return float64(ops.Load()) / d.Seconds()
}

func mgetCmd(n int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n$4\r\nMGET\r\n", n+1)
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("k%d", i)
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(k), k)
	}
	return []byte(b.String())
}

type pattern struct {
	name string
	run  func(c *cluster, stop <-chan struct{})
}

var patterns = []pattern{
	{"none", func(c *cluster, stop <-chan struct{}) {}}, // the measurement's own spread
	{"mget-16385-pipelined", func(c *cluster, stop <-chan struct{}) {
		one := mgetCmd(16385)
		big := append(append([]byte(nil), one...), one...) // two pipelined
		for w := 0; w < 2; w++ {
			go func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					mgetLoop(c.resp[0], big, stop) // reconnects when the node closes the connection
				}
			}()
		}
	}},
	{"unread-256-get-big", func(c *cluster, stop <-chan struct{}) {
		go func() {
			var conns []net.Conn
			defer func() {
				for _, x := range conns {
					x.Close()
				}
			}()
			req := []byte(strings.Repeat("*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n", 256))
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				if conn, err := net.Dial("tcp", c.resp[0]); err == nil {
					conn.(*net.TCPConn).SetReadBuffer(4 << 10)
					conn.Write(req)
					conns = append(conns, conn)
				}
				select {
				case <-stop:
					return
				case <-t.C:
				}
			}
		}()
	}},
	{"trickled-multibulk", func(c *cluster, stop <-chan struct{}) {
		go func() {
			conn, err := net.Dial("tcp", c.resp[0])
			if err != nil {
				return
			}
			defer conn.Close()
			fmt.Fprintf(conn, "*200001\r\n$4\r\nMGET\r\n")
			t := time.NewTicker(time.Millisecond)
			defer t.Stop()
			for i := 0; ; i++ {
				k := fmt.Sprintf("k%d", i)
				fmt.Fprintf(conn, "$%d\r\n%s\r\n", len(k), k)
				select {
				case <-stop:
					return
				case <-t.C:
				}
			}
		}()
	}},
	{"peer-flood-1MiB-x300", func(c *cluster, stop <-chan struct{}) {
		peer := c.args[0][6] // --peer-listen value
		go func() {
			val := make([]byte, 1<<20)
			for i := 0; i < 300; i++ {
				select {
				case <-stop:
					return
				default:
				}
				conn, err := net.Dial("tcp", peer)
				if err != nil {
					continue
				}
				var b []byte
				body := 1 + 8 + 2 + 3 + 16 + 1 + 4 + len(val)
				b = append(b, byte(body>>24), byte(body>>16), byte(body>>8), byte(body))
				b = append(b, 3, 0, 0, 0, 0, 0, 0, 0, byte(i), 0, 3, 'b', 'a', 'd')
				b = append(b, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1, 0)
				b = append(b, byte(len(val)>>24), byte(len(val)>>16), byte(len(val)>>8), byte(len(val)))
				b = append(b, val...)
				conn.Write(b)
				defer conn.Close()
			}
			<-stop
		}()
	}},
}

func mgetLoop(addr string, big []byte, stop <-chan struct{}) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		time.Sleep(10 * time.Millisecond)
		return
	}
	defer conn.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-stop:
		case <-done:
		}
		conn.Close()
	}()
	rd := bufio.NewReader(conn)
	for {
		// Two pipelined MGETs, then their two replies (the issue's
		// pattern, repeated).
		if _, err := conn.Write(big); err != nil {
			return
		}
		for r := 0; r < 2; r++ {
			if err := skipReply(rd); err != nil {
				return
			}
		}
	}
}

// skipReply reads one RESP reply (an error, or an array of bulks/nulls).
func skipReply(rd *bufio.Reader) error {
	line, err := rd.ReadString('\n')
	if err != nil || line[0] != '*' {
		return err
	}
	n, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
	for i := 0; i < n; i++ {
		l, err := rd.ReadString('\n')
		if err != nil {
			return err
		}
		if m, _ := strconv.Atoi(strings.TrimSpace(l[1:])); l[0] == '$' && m >= 0 {
			if _, err := rd.Discard(m + 2); err != nil {
				return err
			}
		}
	}
	return nil
}

// abuse measures each pattern on a fresh cluster, against a baseline of the
// same cluster just before (so one pattern's after-effects cannot weigh on
// the next).
func abuse() {
	for _, p := range patterns {
		if *only != "" && !strings.Contains(","+*only+",", ","+p.name+",") {
			continue
		}
		abuseOne(p)
	}
}

func abuseOne(p pattern) {
	c := newCluster(3)
	defer c.close()
	rc := client(c.resp[0])
	must(rc.Set(ctx, "big", strings.Repeat("b", 1<<20), 0).Err())
	rc.Close()
	base := victims(c.resp[0], *phase)
	baseRSS := maxRSS(c)
	{
		stop := make(chan struct{})
		var peak atomic.Int64
		done := make(chan struct{})
		go func() {
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				if r := int64(maxRSS(c)); r > peak.Load() {
					peak.Store(r)
				}
				select {
				case <-done:
					return
				case <-t.C:
				}
			}
		}()
		p.run(c, stop)
		v := victims(c.resp[0], *phase)
		close(stop)
		close(done)
		time.Sleep(2 * time.Second)
		after := maxRSS(c)
		alive := 0
		for i := range c.procs {
			if c.ready(i) {
				alive++
			}
		}
		fmt.Printf("abuse %-22s victims %6.0f ops/s = %5.1f%% of %6.0f alone; node RSS %3.0f MiB before, peak %4d MiB, 2s after %4.0f MiB; %d/3 nodes ready after\n",
			p.name, v, 100*v/base, base, baseRSS, peak.Load(), after, alive)
	}
}

func maxRSS(c *cluster) float64 {
	m := 0.0
	for _, p := range c.procs {
		m = max(m, rssMiB(p))
	}
	return m
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func main() {
	flag.Parse()
	help, _ := exec.Command(*bin, "kvs", "node", "--help").CombinedOutput()
	secured = strings.Contains(string(help), "--peer-secret-file")
	fmt.Printf("binary %s (peer secret: %v)\n", *bin, secured)
	for _, w := range strings.Split(*what, ",") {
		switch w {
		case "wipe":
			wipeRuns()
		case "abuse":
			abuse()
		}
	}
}
