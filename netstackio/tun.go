package netstackio

// TUNMode selects how OpenTUN talks to the kernel.
type TUNMode int

const (
	// ModeOffload (the default) opens the TUN with virtio-net headers and
	// TSO/checksum offload: the kernel hands over and accepts TCP
	// super-packets of up to 64 KiB with partial checksums, read and
	// written in batches. About 11x the plain mode on this machine.
	ModeOffload TUNMode = iota
	// ModePlain opens the TUN with songgao/water: one MTU-sized packet per
	// call, complete checksums, offloads requested on Write done in
	// software. The portable fallback.
	ModePlain
)

func (m TUNMode) String() string {
	switch m {
	case ModeOffload:
		return "offload"
	case ModePlain:
		return "plain"
	}
	return "unknown"
}

// TUNOptions configures OpenTUN. The zero value is an offload TUN with MTU
// 1500 and a batch of 64.
type TUNOptions struct {
	MTU       int     // link MTU (default 1500)
	Mode      TUNMode // ModeOffload (default) or ModePlain
	BatchSize int     // offload mode: packets per Read at most (default 64); plain mode: 1
}

func (o *TUNOptions) defaults() {
	if o.MTU <= 0 {
		o.MTU = 1500
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 64
	}
}
