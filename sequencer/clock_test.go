package sequencer

import (
	"errors"
	"path/filepath"
	"testing"
	"time"
)

const sec = 1_000_000_000 // one second in ns, untyped

func TestClockStartsAboveStoredAndNow(t *testing.T) {
	c := NewClock(5*sec, 3*sec, time.Second)
	if _, err := c.Next(3 * sec); !errors.Is(err, ErrCeiling) {
		t.Fatalf("Next before any ceiling was persisted: err %v, want ErrCeiling", err)
	}
	w, ok := c.Want(3 * sec)
	if !ok || w != 6*sec {
		t.Fatalf("Want = %d, %v; want %d, true", w, ok, 6*sec)
	}
	c.Persisted(w)
	g, err := c.Next(3 * sec)
	if err != nil || g != 5*sec+1 {
		t.Fatalf("first Next = %d, %v; want stored ceiling + 1 = %d", g, err, 5*sec+1)
	}
	g2, _ := c.Next(5*sec + 500)
	if g2 != 5*sec+500 {
		t.Fatalf("Next follows real time once it passes last: got %d", g2)
	}
	g3, _ := c.Next(1) // clock stepped back
	if g3 != g2+1 {
		t.Fatalf("Next after the wall clock went back = %d, want %d", g3, g2+1)
	}
}

func TestClockStopsAtCeiling(t *testing.T) {
	c := NewClock(0, 10, time.Second)
	c.Persisted(13)
	for _, want := range []uint64{11, 12, 13} {
		// Real time far ahead of the ceiling: positions crawl up to it.
		if g, err := c.Next(100 * sec); err != nil || g != want {
			t.Fatalf("Next = %d, %v; want %d", g, err, want)
		}
	}
	if _, err := c.Next(100 * sec); !errors.Is(err, ErrCeiling) {
		t.Fatalf("Next at the ceiling: %v, want ErrCeiling", err)
	}
	w, ok := c.Want(100 * sec)
	if !ok || w != 101*sec {
		t.Fatalf("Want at the ceiling = %d, %v", w, ok)
	}
	c.Persisted(w)
	c.Persisted(5) // never lowers
	if c.Ceiling() != w {
		t.Fatalf("Persisted lowered the ceiling to %d", c.Ceiling())
	}
	if g, err := c.Next(100 * sec); err != nil || g != 100*sec {
		t.Fatalf("Next after renewal = %d, %v", g, err)
	}
}

func TestClockWantOnlyWhenHalfLeadLeft(t *testing.T) {
	c := NewClock(0, 0, 2*time.Second)
	c.Persisted(2 * sec)
	if _, ok := c.Want(sec - 1); ok {
		t.Fatal("Want with more than half the lead left")
	}
	if w, ok := c.Want(sec + 1); !ok || w != 3*sec+1 {
		t.Fatalf("Want with less than half the lead left = %d, %v", w, ok)
	}
}

func TestClockNeverPassesMaxG(t *testing.T) {
	c := NewClock(MaxG-2, 0, time.Second)
	w, ok := c.Want(0)
	if !ok || w != MaxG {
		t.Fatalf("Want near MaxG = %d, %v", w, ok)
	}
	c.Persisted(^uint64(0))
	if c.Ceiling() != MaxG {
		t.Fatalf("ceiling %d above MaxG", c.Ceiling())
	}
	for range 2 {
		if _, err := c.Next(0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Next(0); !errors.Is(err, ErrCeiling) {
		t.Fatalf("Next past MaxG: %v", err)
	}
}

func TestCeilingFile(t *testing.T) {
	f := CeilingFile{Path: filepath.Join(t.TempDir(), "sub", "seq.state")}
	if v, err := f.Load(); err != nil || v != 0 {
		t.Fatalf("Load of a missing file = %d, %v; want 0, nil", v, err)
	}
	for _, v := range []uint64{1, 1 << 40, MaxG} {
		if err := f.Store(v); err != nil {
			t.Fatal(err)
		}
		if got, err := f.Load(); err != nil || got != v {
			t.Fatalf("Load after Store(%d) = %d, %v", v, got, err)
		}
	}
}

func TestCeilingFileRefusesGarbage(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"empty":    "",
		"other":    "hello\n",
		"nonl":     ceilingMagic + "12",
		"notnum":   ceilingMagic + "x12\n",
		"overflow": ceilingMagic + "9223372036854775808\n",
	} {
		p := filepath.Join(dir, name)
		if err := writeFile(p, body); err != nil {
			t.Fatal(err)
		}
		if v, err := (CeilingFile{Path: p}).Load(); err == nil {
			t.Errorf("%s: Load = %d, nil; want an error", name, v)
		}
	}
}

// A restarted clock, loaded from the file its predecessor persisted,
// hands out only positions above every position of the predecessor, even
// when the wall clock went back.
func TestClockRestartNeverGoesBack(t *testing.T) {
	f := CeilingFile{Path: filepath.Join(t.TempDir(), "seq.state")}
	var now int64 = 100 * sec
	c := NewClock(0, now, time.Second)
	var last uint64
	for i := range 1000 {
		if w, ok := c.Want(now); ok {
			if err := f.Store(w); err != nil {
				t.Fatal(err)
			}
			c.Persisted(w)
		}
		g, err := c.Next(now)
		if err != nil {
			t.Fatal(err)
		}
		last = g
		now += int64(i % 7 * 1000)
	}
	stored, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	c2 := NewClock(stored, now-50*sec, time.Second)
	w, _ := c2.Want(now - 50*sec)
	c2.Persisted(w)
	g, err := c2.Next(now - 50*sec)
	if err != nil || g <= last {
		t.Fatalf("restarted clock's first position %d (%v) not above the last one before %d", g, err, last)
	}
}
