//go:build linux

package rejoin

import (
	"testing"
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
