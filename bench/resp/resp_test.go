package resp

import (
	"bufio"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestAppendCommand(t *testing.T) {
	got := string(AppendCommand(nil, []byte("SET"), []byte("k"), []byte("")))
	want := "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
	if got != want {
		t.Fatalf("AppendCommand = %q, want %q", got, want)
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
	r, err := ReadReply(br)
	check("+OK", err == nil && r.IsOK())
	r, err = ReadReply(br)
	check("error", err == nil && r.Kind == '-' && string(r.Str) == "ERR no quorum" && !r.IsOK())
	r, err = ReadReply(br)
	check("integer", err == nil && r.Kind == ':' && r.Int == 42)
	r, err = ReadReply(br)
	check("bulk", err == nil && r.Kind == '$' && string(r.Str) == "abc")
	r, err = ReadReply(br)
	check("nil bulk", err == nil && r.Nil)
	r, err = ReadReply(br)
	check("array", err == nil && len(r.Elems) == 2 && string(r.Elems[0].Str) == "sydney" && r.Elems[1].Nil)
	r, err = ReadReply(br)
	check("nil array", err == nil && r.Kind == '*' && r.Nil)
}

func TestReadReplyBadInput(t *testing.T) {
	for _, in := range []string{
		"OK\r\n", "+OK\n", ":x\r\n", "$5\r\nab\r\n", "$3\r\nabcXY", "$-2\r\n", "*x\r\n",
		"$99999999999\r\n", "\r\n", "*2\r\n+OK\r\n", "", "*-5\r\n", "$3\r\nab",
		strings.Repeat("*1\r\n", maxDepth+1) + ":1\r\n",
	} {
		_, err := ReadReply(bufio.NewReader(strings.NewReader(in)))
		if err == nil {
			t.Errorf("ReadReply(%q): no error", in)
		}
	}
	_, err := ReadReply(bufio.NewReader(strings.NewReader("?\r\n")))
	if !errors.Is(err, ErrProto) {
		t.Errorf("unknown type: err = %v, want ErrProto", err)
	}
}

// FuzzReadReply: any input gives a reply or an error, never a panic, and
// a reply stays within the reader's bounds; reading the same input again
// gives the same reply.
func FuzzReadReply(f *testing.F) {
	for _, s := range []string{"+OK\r\n", "-ERR x\r\n", ":42\r\n", "$3\r\nabc\r\n", "$-1\r\n", "*2\r\n$1\r\na\r\n:1\r\n", "*-1\r\n", "*1\r\n*1\r\n+x\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		rep, err := ReadReply(bufio.NewReader(strings.NewReader(string(in))))
		if err != nil {
			return
		}
		var check func(r Reply, depth int)
		check = func(r Reply, depth int) {
			if depth > maxDepth || len(r.Str) > maxBulk || len(r.Elems) > maxElems {
				t.Fatalf("reply out of bounds at depth %d: %d bytes, %d elements", depth, len(r.Str), len(r.Elems))
			}
			for _, e := range r.Elems {
				check(e, depth+1)
			}
		}
		check(rep, 0)
		again, err := ReadReply(bufio.NewReader(strings.NewReader(string(in))))
		if err != nil || fmt.Sprint(again) != fmt.Sprint(rep) {
			t.Fatalf("%q read twice: %+v then %+v, %v", in, rep, again, err)
		}
	})
}
