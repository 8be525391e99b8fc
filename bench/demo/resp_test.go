package demo

import (
	"bufio"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestAppendCommand(t *testing.T) {
	got := string(appendCommand(nil, []byte("SET"), []byte("k"), []byte("")))
	want := "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
	if got != want {
		t.Fatalf("appendCommand = %q, want %q", got, want)
	}
}

func TestReadReply(t *testing.T) {
	in := "+OK\r\n-ERR no quorum\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*2\r\n$6\r\nsydney\r\n$-1\r\n*-1\r\n"
	br := bufio.NewReader(strings.NewReader(in))
	check := func(what string, ok bool) {
		t.Helper()
		if !ok {
			t.Fatalf("reply %s: wrong", what)
		}
	}
	r, err := readReply(br)
	check("+OK", err == nil && r.IsOK())
	r, err = readReply(br)
	check("error", err == nil && r.Kind == '-' && string(r.Str) == "ERR no quorum" && !r.IsOK())
	r, err = readReply(br)
	check("integer", err == nil && r.Kind == ':' && r.Int == 42)
	r, err = readReply(br)
	check("bulk", err == nil && r.Kind == '$' && string(r.Str) == "abc")
	r, err = readReply(br)
	check("nil bulk", err == nil && r.Nil)
	r, err = readReply(br)
	check("array", err == nil && len(r.Elems) == 2 && string(r.Elems[0].Str) == "sydney" && r.Elems[1].Nil)
	r, err = readReply(br)
	check("nil array", err == nil && r.Kind == '*' && r.Nil)
}

func TestReadReplyBadInput(t *testing.T) {
	for _, in := range []string{
		"OK\r\n", "+OK\n", ":x\r\n", "$5\r\nab\r\n", "$3\r\nabcXY", "$-2\r\n", "*x\r\n",
		"$99999999999\r\n", "\r\n", "*2\r\n+OK\r\n",
	} {
		_, err := readReply(bufio.NewReader(strings.NewReader(in)))
		if err == nil {
			t.Errorf("readReply(%q): no error", in)
		}
	}
	_, err := readReply(bufio.NewReader(strings.NewReader("?\r\n")))
	if !errors.Is(err, errProto) {
		t.Errorf("unknown type: err = %v, want errProto", err)
	}
}

func TestValueDeterministic(t *testing.T) {
	w, err := NewWorkload(WorkloadConfig{Readers: 1, DialRead: nil, ValueSize: 32, KeyPrefix: "p:"})
	if err == nil {
		t.Fatal("NewWorkload without a dialer: no error")
	}
	w, err = NewWorkload(WorkloadConfig{Writers: 1, DialWrite: dialNever, ValueSize: 32, KeyPrefix: "p:"})
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

func TestMaxGapAndSumMetric(t *testing.T) {
	s := int64(time.Second)
	if g := maxGap([]int64{3 * s, 1 * s, 2 * s}, 10*s); g != 7 {
		t.Errorf("maxGap = %v, want 7 (last event to end)", g)
	}
	raw := []byte("# HELP x\nsdnkvs_rst_total{dc=\"a\"} 2\nsdnkvs_rst_total{dc=\"b\"} 3\nsdnkvs_rst_total_other 9\nsdnkvs_rst_total 1e1\n")
	v, ok, err := sumMetric(raw, "sdnkvs_rst_total")
	if err != nil || !ok || v != 15 {
		t.Errorf("sumMetric = %v %v %v, want 15 true nil", v, ok, err)
	}
	if _, ok, _ := sumMetric(raw, "absent"); ok {
		t.Error("sumMetric found an absent metric")
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Bin: "/x"}
	c, err := good.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Near != "sydney" || c.Far != "dublin" || c.Nodes != 9 || c.FarDelay != 170*time.Millisecond || c.Detector != "fast" || c.Duration > time.Minute {
		t.Errorf("defaults: %+v", c)
	}
	for name, bad := range map[string]Config{
		"no binary": {},
		"same DCs":  {Bin: "/x", Near: "a", Far: "a"},
		"mode":      {Bin: "/x", Mode: "magic"},
		"cut late":  {Bin: "/x", Duration: 5 * time.Second, CutAt: 6 * time.Second},
		"nodes":     {Bin: "/x", Nodes: 500},
		"value":     {Bin: "/x", ValueSize: 4},
	} {
		if _, err := bad.WithDefaults(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
