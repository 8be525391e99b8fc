package ackmerge

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestPureDependencies keeps the core pure: ackmerge (and the packet view
// it is built on) links no TUN library, no network stack and nothing of
// netstackio beyond the leaf virtio-header and packet packages. The only
// third-party code allowed is gVisor's two dependency-free leaf packages
// for checksums and sequence numbers.
func TestPureDependencies(t *testing.T) {
	allowed := []string{
		"github.com/sdnkvs/sdnkvs/ackmerge",
		"github.com/sdnkvs/sdnkvs/netstackio/packet",
		"github.com/sdnkvs/sdnkvs/netstackio/virtio",
		"gvisor.dev/gvisor/pkg/tcpip/checksum",
		"gvisor.dev/gvisor/pkg/tcpip/seqnum",
	}
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	var got []string
	for _, p := range strings.Fields(string(out)) {
		got = append(got, p)
		if !slices.Contains(allowed, p) {
			t.Errorf("ackmerge links %s; the pure core may link only %v", p, allowed)
		}
	}
	if !slices.Contains(got, "github.com/sdnkvs/sdnkvs/netstackio/packet") {
		t.Fatalf("go list output lacks ackmerge's own dependencies, so the check checked nothing: %q", out)
	}
}
