//go:build linux

package scenario

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

func TestValueDeterministic(t *testing.T) {
	_, err := NewWorkload(WorkloadConfig{Readers: 1, DialRead: nil, ValueSize: 32, KeyPrefix: "p:"})
	if err == nil {
		t.Fatal("NewWorkload without a dialer: no error")
	}
	w, err := NewWorkload(WorkloadConfig{Writers: 1, DialWrite: dialNever, ValueSize: 32, KeyPrefix: "p:"})
	if err != nil {
		t.Fatal(err)
	}
	if string(w.Key(7)) != "p:7" {
		t.Errorf("Key(7) = %q", w.Key(7))
	}
	a, b := w.Value(12345), w.Value(12345)
	if string(a) != string(b) || len(a) != 32 || string(a) == string(w.Value(12346)) {
		t.Errorf("Value not deterministic, sized or distinct: %q %q", a, w.Value(12346))
	}
}

func TestBucketPaces(t *testing.T) {
	b := &bucket{rate: 100, burst: 10, last: time.Now().Add(-time.Second)}
	n, _ := b.take(50)
	if n != 10 {
		t.Fatalf("after a second at 100/s with burst 10: take = %d, want 10", n)
	}
	n, wait := b.take(50)
	if n != 0 || wait <= 0 {
		t.Fatalf("empty bucket: take = %d, wait %v; want 0 and a wait", n, wait)
	}
	unl := &bucket{}
	if n, _ := unl.take(7); n != 7 {
		t.Fatalf("unlimited bucket: take = %d, want 7", n)
	}
}

func TestSumMetric(t *testing.T) {
	raw := []byte("# HELP x\nsdnkvs_rst_total{dc=\"a\"} 2\nsdnkvs_rst_total{dc=\"b\"} 3\nsdnkvs_rst_total_other 9\nsdnkvs_rst_total 1e1\n")
	v, ok, err := sumMetric(raw, "sdnkvs_rst_total")
	if err != nil || !ok || v != 15 {
		t.Errorf("sumMetric = %v %v %v, want 15 true nil", v, ok, err)
	}
	if _, ok, _ := sumMetric(raw, "absent"); ok {
		t.Error("sumMetric found an absent metric")
	}
}

func dialNever(ctx context.Context) (net.Conn, error) {
	return nil, errors.New("no network in this test")
}

func TestCatchupTotals(t *testing.T) {
	s := func(at time.Duration, dc string, job, keys uint64, done bool) ProgressSample {
		st := "running"
		if done {
			st = "done"
		}
		return ProgressSample{At: at, DC: dc, Done: done, CatchupProgress: CatchupProgress{Job: job, State: st, Keys: keys, Bytes: keys * 10}}
	}
	samples := []ProgressSample{
		s(1*time.Second, "a", 1, 50, true), // an earlier pass, seen before from: left out
		s(3*time.Second, "a", 2, 10, false),
		s(4*time.Second, "b", 9, 999, false), // another DC
		s(5*time.Second, "a", 2, 100, false),
		s(6*time.Second, "a", 2, 100, true),
		s(7*time.Second, "a", 3, 5, false), // a second pass
		s(8*time.Second, "a", 1, 50, true),
	}
	keys, bytes, first, last := CatchupTotals(samples, "a", 2*time.Second, 10*time.Second)
	if keys != 105 || bytes != 1050 || first != 3*time.Second || last != 7*time.Second {
		t.Errorf("CatchupTotals = %d keys, %d bytes, first %v, last %v; want 105, 1050, 3s, 7s", keys, bytes, first, last)
	}
}
