//go:build linux

package rejoin

import (
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/scenario"
	"github.com/sdnkvs/sdnkvs/bench/testbed"
)

func TestParseCases(t *testing.T) {
	got, err := ParseCases("10000x32, 100kx32,1Mx32,2000x64KiB")
	if err != nil {
		t.Fatal(err)
	}
	want := []Case{{10000, 32}, {100000, 32}, {1000000, 32}, {2000, 65536}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("case %d: got %v, want %v", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"", "10000", "0x32", "10x8", "10x2MiB", "axb", "10x32,"} {
		if _, err := ParseCases(bad); err == nil {
			t.Errorf("ParseCases(%q): no error", bad)
		}
	}
}

func TestPassesRunning(t *testing.T) {
	s := func(at float64, job uint64, state string) scenario.ProgressSample {
		return scenario.ProgressSample{At: time.Duration(at * float64(time.Second)), DC: "dublin",
			CatchupProgress: scenario.CatchupProgress{Job: job, State: state}}
	}
	samples := []scenario.ProgressSample{
		s(0.5, 7, "running"), // a pass of an earlier case: left out
		s(1, 1, "running"), s(2, 1, "running"), s(3, 1, "done"), s(4, 1, "done"),
		s(5, 2, "running"), {At: 5500 * time.Millisecond, DC: "sydney"}, s(6.5, 2, "done"),
		s(7, 3, "running"), s(7.5, 4, "running"), s(8, 4, "done"), // pass 3 replaced by pass 4
		s(9, 5, "running"), s(10, 5, "running"), s(11, 5, "running"), // the DC goes live: no done sample
		s(12, 9, "running"), // after to
	}
	got := passesRunning(samples, "dublin", time.Second, 11500*time.Millisecond)
	if want := 2*time.Second + 1500*time.Millisecond + 500*time.Millisecond + 500*time.Millisecond + 2*time.Second; got != want {
		t.Fatalf("passes running %v, want %v", got, want)
	}
}

// infoField reads a number from INFO's CRLF lines, and reports a field
// that is missing or not a number.
func TestInfoField(t *testing.T) {
	info := "# Catchup\r\nsdnkvs_catchup_window:3.250\r\nsdnkvs_catchup_paused_seconds:12.5\r\nsdnkvs_catchup_paused_seconds_x:1\r\nbad:x\r\n"
	if v, ok := infoField(info, "sdnkvs_catchup_paused_seconds"); !ok || v != 12.5 {
		t.Fatalf("paused: %v %v", v, ok)
	}
	if _, ok := infoField(info, "missing"); ok {
		t.Fatal("a missing field was found")
	}
	if _, ok := infoField(info, "bad"); ok {
		t.Fatal("a field that is not a number was read")
	}
	if got := paused(-1); got != "-" {
		t.Fatalf("unknown paused time rendered %q", got)
	}
}

// TestDropsColumns: unread drops render "-" in the table, -1 in the CSV
// and "unknown" in the log; read ones their total and each count.
func TestDropsColumns(t *testing.T) {
	unknown := Row{}
	if drops(unknown) != "-" || dropField(unknown, 0) != -1 || dropsText(unknown) != "unknown" {
		t.Fatalf("unknown drops rendered %q, %d, %q", drops(unknown), dropField(unknown, 0), dropsText(unknown))
	}
	known := Row{DropsKnown: true, Drops: testbed.DropCounts{Queue: 3, Loss: 1, Link: 0, TUN: 2}}
	if drops(known) != "6" || dropField(known, known.Drops.Queue) != 3 {
		t.Fatalf("drops rendered %q, queue %d", drops(known), dropField(known, known.Drops.Queue))
	}
	if got := dropsText(known); got != "emulator queue 3, random loss 1, link interfaces 0, middlebox TUN 2" {
		t.Fatalf("log text %q", got)
	}
}
