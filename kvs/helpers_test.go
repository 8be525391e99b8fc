package kvs

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var lns []net.Listener
	var ports []int
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// testCluster starts n nodes with quorum q on random loopback ports, storing
// under t.TempDir(); every node is stopped at cleanup.
func testCluster(t testing.TB, n, q int, timeout time.Duration) *Cluster {
	t.Helper()
	return startCluster(t, "", n, timeout, func(c *Config, spare string) {
		c.HTTPListen, c.Quorum = spare, q
	})
}

// startCluster starts n nodes on free loopback ports with the given request
// timeout, storing under t.TempDir(): node i gets ID i+1, its RESP and peer
// listeners, every node's peer address and the test peer secret. set, if
// not nil, then adjusts each node's Config and receives a third free
// loopback address of that node's own (for its HTTP or order listener).
// Every node is stopped at cleanup; it returns once all nodes are
// connected (name, if not empty, names the cluster in a timeout).
func startCluster(t testing.TB, name string, n int, timeout time.Duration, set func(c *Config, spare string)) *Cluster {
	t.Helper()
	ports := freePorts(t, 3*n)
	dir := t.TempDir()
	var peers []string
	for i := 0; i < n; i++ {
		peers = append(peers, fmt.Sprintf("127.0.0.1:%d", ports[n+i]))
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfgs := make([]Config, n)
	for i := range cfgs {
		cfgs[i] = Config{
			ID: i + 1, Listen: fmt.Sprintf("127.0.0.1:%d", ports[i]), PeerListen: peers[i], Peers: peers,
			Dir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)), Timeout: timeout, Logger: log, PeerSecret: testSecret,
		}
		if set != nil {
			set(&cfgs[i], fmt.Sprintf("127.0.0.1:%d", ports[2*n+i]))
		}
	}
	c, err := StartNodes(cfgs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	what := "all nodes connected"
	if name != "" {
		what = name + ": " + what
	}
	testenv.WaitFor(t, 10*time.Second, what, c.AllReady)
	return c
}

func client(t testing.TB, c *Cluster, i int) *redis.Client {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: c.Config(i).Listen, MaxRetries: -1,
		DialTimeout: time.Second, ReadTimeout: 15 * time.Second, PoolSize: 4})
	t.Cleanup(func() { rc.Close() })
	return rc
}

var bg = context.Background()

// testSecret is the peer secret of test clusters.
var testSecret = []byte("kvs-test-cluster-secret-0123456789")
