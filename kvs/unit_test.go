package kvs

import (
	"bytes"
	"testing"
)

func TestTagOrder(t *testing.T) {
	a, b, c := Tag{1, 5}, Tag{1, 6}, Tag{2, 0}
	if a.Compare(b) != -1 || b.Compare(c) != -1 || c.Compare(a) != 1 || a.Compare(a) != 0 {
		t.Fatal("tags must order by (counter, writer)")
	}
	if DecodeTag(AppendTag(nil, b)) != b {
		t.Fatal("tag round trip")
	}
}

func TestWireRoundTripNoAlloc(t *testing.T) {
	var b, b2 []byte
	var rq request
	var rs response
	key, val := []byte("key"), []byte("value")
	allocs := testing.AllocsPerRun(100, func() {
		b = appendWriteReq(b[:0], 42, key, Tag{7, 9}, flagTombstone, val)
		if err := decodeReq(b[4:], &rq); err != nil {
			t.Fatal(err)
		}
		b2 = appendResp(b2[:0], kindRead, 43, statusOK, Tag{7, 9}, 0, val)
		if err := decodeResp(b2[4:], &rs); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("peer frame encode/decode allocates %.1f times, want 0", allocs)
	}
	if rq.id != 42 || string(rq.key) != "key" || rq.tag != (Tag{7, 9}) || rq.flags != flagTombstone || string(rq.val) != "value" {
		t.Fatalf("request round trip: %+v", rq)
	}
	if rs.id != 43 || rs.kind != kindRead || string(rs.val) != "value" {
		t.Fatalf("response round trip: %+v", rs)
	}
	// Truncations are errors, never panics.
	full := appendWriteReq(nil, 1, key, Tag{1, 1}, 0, val)[4:]
	for i := 0; i < len(full); i++ {
		if decodeReq(full[:i], &rq) == nil {
			t.Fatalf("truncated request of %d bytes decoded", i)
		}
	}
}

func TestParserPipelineNoAlloc(t *testing.T) {
	in := []byte("*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n*2\r\n$3\r\nGET\r\n$3\r\nkey\r\nPING\r\n")
	p := newRESPParser(1<<20, 1<<20)
	p.next(in) // warm up args capacity
	var got [][]string
	allocs := testing.AllocsPerRun(100, func() {
		b := in
		got = got[:0]
		for len(b) > 0 {
			n, res := p.next(b)
			if res != resCommand {
				t.Fatalf("res %d", res)
			}
			b = b[n:]
		}
	})
	if allocs != 0 {
		t.Errorf("parsing a pipeline allocates %.1f times, want 0", allocs)
	}
	b := in
	for len(b) > 0 {
		n, _ := p.next(b)
		var cmd []string
		for _, a := range p.args {
			cmd = append(cmd, string(a))
		}
		got = append(got, nil)
		_ = cmd
		b = b[n:]
		if len(p.args) == 0 {
			t.Fatal("empty command")
		}
	}
	if len(got) != 3 {
		t.Fatalf("parsed %d commands, want 3", len(got))
	}
}

func TestParserIncrementalAndOversized(t *testing.T) {
	p := newRESPParser(8, 1<<20)
	in := []byte("*2\r\n$3\r\nGET\r\n$20\r\n01234567890123456789\r\n*1\r\n$4\r\nPING\r\n")
	// Feed one byte at a time, as slow networks do.
	var buf []byte
	var results []parseResult
	var last [][]byte
	for _, c := range in {
		buf = append(buf, c)
		for {
			n, res := p.next(buf)
			buf = buf[n:]
			if res == resNeedMore {
				break
			}
			if res == resProto {
				t.Fatalf("protocol error: %s", p.err)
			}
			if res != resSkip {
				results = append(results, res)
			}
			if res == resCommand {
				last = append([][]byte(nil), p.args...)
			}
		}
	}
	if len(results) != 2 || results[0] != resTooBig || results[1] != resCommand || !bytes.Equal(last[0], []byte("PING")) {
		t.Fatalf("results %v, last %q", results, last)
	}
}

func TestStoreNeverGoesBack(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(StoreOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan Tag, 3)
	put := func(tg Tag, v string) Tag {
		s.Put([]byte("k"), tg, 0, []byte(v), 1, completionFunc(func(id uint64, ok bool, held Tag) {
			if !ok {
				t.Error("store failed")
			}
			done <- held
		}))
		return <-done
	}
	if h := put(Tag{5, 1}, "five"); h != (Tag{5, 1}) {
		t.Fatalf("held %v", h)
	}
	if h := put(Tag{3, 9}, "three"); h != (Tag{5, 1}) {
		t.Fatalf("a lower tag replaced a higher one: held %v", h)
	}
	w1, _ := s.NextWriter()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenStore(StoreOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if tg, _, v, _ := s.Get([]byte("k"), true, nil); tg != (Tag{5, 1}) || string(v) != "five" {
		t.Fatalf("after reopen: %v %q", tg, v)
	}
	if h := put(Tag{4, 0}, "four"); h != (Tag{5, 1}) {
		t.Fatalf("after reopen a lower tag replaced a higher one: %v", h)
	}
	if w2, _ := s.NextWriter(); w2 <= w1 {
		t.Fatalf("writer sequence went back across restart: %d then %d", w1, w2)
	}
}

type completionFunc func(id uint64, ok bool, held Tag)

func (f completionFunc) writeDone(id uint64, ok bool, held Tag) { f(id, ok, held) }
