package linmodel

import (
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

func op(client int, in Input, out string, call, ret int64) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
}

// A read sees the last write or delete that finished before it began;
// keys are independent; a write of unknown outcome may take effect late.
func TestModelAcceptsLinearizable(t *testing.T) {
	ops := []porcupine.Operation{
		op(0, Input{Op: Set, Key: "a", Value: "1"}, "", 0, 10),
		op(1, Input{Op: Get, Key: "a"}, "1", 20, 30),
		op(2, Input{Op: Get, Key: "b"}, "", 20, 30),
		op(0, Input{Op: Del, Key: "a"}, "", 40, 50),
		op(1, Input{Op: Get, Key: "a"}, "", 60, 70),
		op(2, Input{Op: Set, Key: "b", Value: "2"}, "", 80, math.MaxInt64),
		op(1, Input{Op: Get, Key: "b"}, "", 90, 100),
		op(1, Input{Op: Get, Key: "b"}, "2", 110, 120),
	}
	if res, path := Check(ops, 10*time.Second, t.TempDir()); res != porcupine.Ok || path != "" {
		t.Fatalf("result %v (visualization %q), want ok", res, path)
	}
	if got := Model.Partition(ops); len(got) != 2 || len(got[0]) != 4 || got[0][0].Input.(Input).Key != "a" || len(got[1]) != 4 {
		t.Errorf("partitions %v: want a then b, 4 ops each", got)
	}
}

// A read of a value deleted before it began is not linearizable, and the
// visualization is written.
func TestModelRejectsStaleRead(t *testing.T) {
	ops := []porcupine.Operation{
		op(0, Input{Op: Set, Key: "a", Value: "1"}, "", 0, 10),
		op(0, Input{Op: Del, Key: "a"}, "", 20, 30),
		op(1, Input{Op: Get, Key: "a"}, "1", 40, 50),
	}
	res, path := Check(ops, 10*time.Second, t.TempDir())
	if res != porcupine.Illegal {
		t.Fatalf("result %v, want illegal", res)
	}
	b, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(b), "del(a)") {
		t.Errorf("visualization %s: %v (want it to name del(a))", path, err)
	}
}

func TestDescribeOperation(t *testing.T) {
	for _, c := range []struct {
		in   Input
		out  string
		want string
	}{
		{Input{Op: Get, Key: "k"}, "v", `get(k) -> "v"`},
		{Input{Op: Set, Key: "k", Value: "v"}, "", "set(k, v)"},
		{Input{Op: Del, Key: "k"}, "", "del(k)"},
	} {
		if got := Model.DescribeOperation(c.in, c.out); got != c.want {
			t.Errorf("%+v: %q, want %q", c.in, got, c.want)
		}
	}
}
