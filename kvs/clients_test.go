package kvs

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

func redisCLI(t *testing.T, addr string, args ...string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command("redis-cli", append([]string{"-h", host, "-p", port}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestRedisCLI(t *testing.T) {
	testenv.RequireCommand(t, "redis-cli")
	c := testCluster(t, 9, 5, 10*time.Second)
	a, b := c.Config(0).Listen, c.Config(7).Listen
	for _, tc := range []struct {
		addr string
		args []string
		want string
	}{
		{a, []string{"PING"}, "PONG"},
		{a, []string{"SET", "greeting", "hello world"}, "OK"},
		{b, []string{"GET", "greeting"}, "hello world"},
		{b, []string{"EXISTS", "greeting", "nope"}, "1"},
		{a, []string{"MSET", "a", "1", "b", "2"}, "OK"},
		{b, []string{"MGET", "a", "b", "c"}, "1\n2"},
		{b, []string{"DEL", "a", "zzz"}, "2"},
		{a, []string{"GET", "a"}, ""},
		{a, []string{"NOSUCH", "x"}, "ERR unknown command 'NOSUCH', with args beginning with: 'x'"},
		{a, []string{"GET"}, "ERR wrong number of arguments for 'get' command"},
	} {
		if got := redisCLI(t, tc.addr, tc.args...); got != tc.want {
			t.Errorf("redis-cli %v = %q, want %q", tc.args, got, tc.want)
		}
	}
	if info := redisCLI(t, a, "INFO"); !strings.Contains(info, "redis_version:") || !strings.Contains(info, "sdnkvs_quorum:5") {
		t.Errorf("INFO lacks version or quorum:\n%s", info)
	}
}

func TestRedisBenchmark(t *testing.T) {
	testenv.RequireCommand(t, "redis-benchmark")
	c := testCluster(t, 9, 5, 10*time.Second)
	host, port, _ := net.SplitHostPort(c.Config(0).Listen)
	for _, pipe := range []string{"1", "8"} {
		cmd := exec.Command("redis-benchmark", "-h", host, "-p", port, "-c", "10", "-n", "2000",
			"-t", "set,get", "-r", "1000", "-P", pipe, "--csv")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("redis-benchmark: %v\n%s%s", err, stdout.String(), stderr.String())
		}
		if s := stderr.String() + stdout.String(); strings.Contains(s, "WARN") || strings.Contains(s, "ERR") {
			t.Fatalf("redis-benchmark -P %s warned or saw errors:\n%s", pipe, s)
		}
		rows := 0
		for _, line := range strings.Split(stdout.String(), "\n") {
			if strings.HasPrefix(line, `"SET"`) || strings.HasPrefix(line, `"GET"`) {
				rows++
			}
		}
		if rows != 2 {
			t.Fatalf("redis-benchmark -P %s printed %d result rows, want 2:\n%s", pipe, rows, stdout.String())
		}
	}
	// The benchmark's writes are readable through another node.
	// (redis-benchmark -r 1000 writes 3-byte values to key:000000000000..999.)
	found := 0
	for i := 0; i < 1000 && found == 0; i += 37 {
		if v := redisCLI(t, c.Config(4).Listen, "GET", fmt.Sprintf("key:%012d", i)); len(v) == 3 {
			found++
		}
	}
	if found == 0 {
		t.Errorf("no benchmark key readable through another node")
	}
	if st := c.Node(0).Stats(); st.Errors.Load() != 0 {
		t.Errorf("node 1 answered %d errors during redis-benchmark", st.Errors.Load())
	}
}

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Printf(_ context.Context, format string, v ...any) {
	l.mu.Lock()
	fmt.Fprintf(&l.b, format+"\n", v...)
	l.mu.Unlock()
}

func TestGoRedis(t *testing.T) {
	c := testCluster(t, 9, 5, 10*time.Second)
	var logs logBuf
	redis.SetLogger(&logs)
	t.Cleanup(func() { redis.SetLogger(quietLogger{}) })
	rc := redis.NewClient(&redis.Options{Addr: c.Config(3).Listen})
	defer rc.Close()
	if err := rc.Ping(bg).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Set(bg, "g", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// A pipeline: unknown command, wrong arity and an oversized key in the
	// middle get errors; the commands around them still work.
	pipe := rc.Pipeline()
	set := pipe.Set(bg, "p", "2", 0)
	bad := pipe.Do(bg, "FLUSHALL")
	arity := pipe.Do(bg, "GET", "a", "b")
	big := pipe.Get(bg, strings.Repeat("k", 5000))
	get := pipe.Get(bg, "p")
	getg := pipe.Get(bg, "g")
	pipe.Exec(bg)
	if set.Err() != nil || get.Val() != "2" || getg.Val() != "1" {
		t.Fatalf("pipeline: set %v, get %q %v, get g %q", set.Err(), get.Val(), get.Err(), getg.Val())
	}
	for name, err := range map[string]error{"unknown": bad.Err(), "arity": arity.Err(), "big key": big.Err()} {
		if err == nil || !strings.HasPrefix(err.Error(), "ERR ") {
			t.Errorf("%s command: err = %v, want an ERR reply", name, err)
		}
	}
	if err := rc.Set(bg, "v", strings.Repeat("v", 2<<20), 0).Err(); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Errorf("oversized value: err = %v, want too large", err)
	}
	if v, err := rc.Get(bg, "g").Result(); err != nil || v != "1" {
		t.Fatalf("connection unusable after oversized value: %q %v", v, err)
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	if logs.b.Len() != 0 {
		t.Errorf("go-redis logged warnings:\n%s", logs.b.String())
	}
}

func TestReadiness(t *testing.T) {
	c := testCluster(t, 3, 2, time.Second)
	get := func(path string) int {
		resp, err := http.Get("http://" + c.Node(0).HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if get("/ready") != 200 || get("/healthz") != 200 {
		t.Fatalf("ready/healthz not 200 on a healthy cluster")
	}
	c.Stop(1)
	c.Stop(2)
	testenv.WaitFor(t, 5*time.Second, "/ready to report 503 without a quorum", func() bool { return get("/ready") == 503 })
	if get("/healthz") != 200 {
		t.Fatalf("healthz should stay 200")
	}
}

// Raw protocol: inline commands, garbage and oversized bulks.
func TestRawProtocol(t *testing.T) {
	c := testCluster(t, 1, 1, time.Second)
	conn, err := net.Dial("tcp", c.Config(0).Listen)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rd := bufio.NewReader(conn)
	line := func() string {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		s, err := rd.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimRight(s, "\r\n")
	}
	fmt.Fprintf(conn, "PING\r\nSET a b\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n")
	for _, want := range []string{"+PONG", "+OK", "$1", "b"} {
		if got := line(); got != want {
			t.Fatalf("got %q want %q", got, want)
		}
	}
	// A 2 MiB value is refused without buffering it; the connection goes on.
	fmt.Fprintf(conn, "*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$%d\r\n", 2<<20)
	conn.Write(bytes.Repeat([]byte("z"), 2<<20))
	fmt.Fprintf(conn, "\r\nPING\r\n")
	if got := line(); !strings.Contains(got, "too large") {
		t.Fatalf("oversized: %q", got)
	}
	if got := line(); got != "+PONG" {
		t.Fatalf("after oversized: %q", got)
	}
	// Garbage inside a multibulk is a protocol error: answered, then closed.
	fmt.Fprintf(conn, "*2\r\n$x\r\n")
	if got := line(); !strings.HasPrefix(got, "-ERR Protocol error") {
		t.Fatalf("garbage: %q", got)
	}
}
