//go:build linux

package testbed

import "testing"

// TestDropCountsByDirection: the emulator's queue drops are split by link
// direction, subtracted per direction, and the zero ones left out.
func TestDropCountsByDirection(t *testing.T) {
	before := DropCounts{Queue: 5, QueueBy: map[string]int64{"sydney out": 5}}
	now := DropCounts{Queue: 12, Loss: 1, QueueBy: map[string]int64{"sydney out": 9, "dublin in": 3, "dublin out": 0}}
	d := now.Sub(before)
	if d.Queue != 7 || d.QueueBy["sydney out"] != 4 || d.QueueBy["dublin in"] != 3 {
		t.Fatalf("Sub = %+v", d)
	}
	if got, want := d.String(), "emulator queue 7 (dublin in 3, sydney out 4), random loss 1, link interfaces 0, middlebox TUN 0"; got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
	if got, want := (DropCounts{}).String(), "emulator queue 0, random loss 0, link interfaces 0, middlebox TUN 0"; got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
}
