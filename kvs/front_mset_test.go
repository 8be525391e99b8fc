package kvs

import (
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/testenv"
)

// TestMSetLargeValuesRedisPy: MSET holds keys to MaxKey and values to
// MaxValue only, so redis-py can MSET 64 KiB values (the rejoin benchmark
// writes them); an oversized key in the same command is still refused.
func TestMSetLargeValuesRedisPy(t *testing.T) {
	py := testenv.RedisPy(t)
	c := testCluster(t, 3, 2, 10*time.Second)
	host, port, _ := net.SplitHostPort(c.Config(0).Listen)
	script := `
import sys, redis
r = redis.Redis(host=sys.argv[1], port=int(sys.argv[2]))
vals = {"big%d" % i: bytes([65 + i]) * (64 << 10) for i in range(4)}
assert r.mset(vals) is True
got = r.mget(list(vals))
assert got == list(vals.values()), [len(v or b"") for v in got]
try:
    r.mset({"k" * 5000: b"v", "ok": b"x" * (64 << 10)})
    print("oversized key accepted")
    sys.exit(1)
except redis.ResponseError as e:
    assert "key too large" in str(e), e
assert r.get("ok") is None
print("ok")
`
	out, err := exec.Command(py, "-c", script, host, port).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("redis-py MSET of 64 KiB values: %v\n%s", err, out)
	}
}
