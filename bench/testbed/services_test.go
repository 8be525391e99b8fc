//go:build linux

package testbed_test

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/testbed"
	"github.com/sdnkvs/sdnkvs/bench/testbed/testbedtest"
	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

// TestServiceHelpers checks the readiness waits against stand-ins: an HTTP
// server listening inside the gateway namespace, and a script that prints
// "cluster ready" in a DC namespace.
func TestServiceHelpers(t *testing.T) {
	testenv.RequireRoot(t)
	tb := testbedtest.ForTest(t, testbed.Config{DCs: []testbed.DC{{Name: "sydney", Nodes: 3}}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	var ln net.Listener
	if err := testbed.InNetns(testbed.NetnsPath(tb.NS("gw")), func() (err error) {
		ln, err = net.Listen("tcp", "127.0.0.1:9090")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/dcs" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("[]"))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	if err := tb.WaitHTTP(ctx, "gw", "http://127.0.0.1:9090/dcs", nil); err != nil {
		t.Fatal(err)
	}
	short, cancel2 := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel2()
	if err := tb.WaitHTTP(short, "gw", "http://127.0.0.1:9090/nope", nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("404 endpoint: err = %v", err)
	}
	// The same port from the root namespace reaches nothing of ours.
	if c, err := net.DialTimeout("tcp", "127.0.0.1:9090", 200*time.Millisecond); err == nil {
		c.Close()
		t.Log("note: something else listens on 127.0.0.1:9090 in the root namespace")
	}

	dir := t.TempDir()
	script := filepath.Join(dir, "fake-sdnkvs")
	body := "#!/bin/sh\n# args: kvs cluster --ips IPS --data DIR\n" +
		"for ip in $(echo \"$4\" | tr , ' '); do echo \"node $ip ready\"; done\necho cluster ready\nexec sleep 300\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := tb.StartKVSCluster(ctx, script, "sydney", filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	if out := p.Output(); !strings.Contains(out, "node 10.210.1.13 ready") {
		t.Fatalf("cluster output: %q", out)
	}
	failing := filepath.Join(dir, "failing")
	os.WriteFile(failing, []byte("#!/bin/sh\necho boom >&2\nexit 3\n"), 0o755)
	if _, err := tb.StartKVSCluster(ctx, failing, "sydney", filepath.Join(dir, "d2")); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("failing cluster: err = %v, want the output in it", err)
	}
	p.Stop(time.Second)
	select {
	case <-p.Exited():
	default:
		t.Fatal("Stop returned with the process running")
	}
}
