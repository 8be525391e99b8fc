package netstackio

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"

	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
	"github.com/songgao/water"
	"golang.org/x/sys/unix"
)

// OpenTUN creates the TUN interface name (in the calling thread's network
// namespace: wrap the call in InNetns to create it elsewhere), sets its
// MTU, disables IPv6 on it (so no router solicitations or MLD reports
// arrive) and brings it up. The interface disappears when the Device is
// closed. Needs CAP_NET_ADMIN.
func OpenTUN(name string, opts TUNOptions) (Device, error) {
	opts.defaults()
	if len(name) == 0 || len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("netstackio: bad TUN name %q", name)
	}
	if opts.MTU < 576 || opts.MTU > MaxPacket {
		return nil, fmt.Errorf("netstackio: TUN MTU %d out of range [576, %d]", opts.MTU, MaxPacket)
	}
	switch opts.Mode {
	case ModeOffload:
		return openOffloadTUN(name, opts)
	case ModePlain:
		return openPlainTUN(name, opts)
	}
	return nil, fmt.Errorf("netstackio: unknown TUN mode %d", opts.Mode)
}

// configureLink disables IPv6 on the interface, sets its MTU and brings it
// up, in the calling thread's network namespace.
func configureLink(name string, mtu int) error {
	// /proc/sys/net resolves against the opening thread's namespace.
	p := "/proc/sys/net/ipv6/conf/" + name + "/disable_ipv6"
	if err := os.WriteFile(p, []byte("1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("netstackio: disable IPv6 on %s: %w", name, err)
	}
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("netstackio: socket: %w", err)
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	ifr.SetUint32(uint32(mtu))
	if err := unix.IoctlIfreq(s, unix.SIOCSIFMTU, ifr); err != nil {
		return fmt.Errorf("netstackio: set MTU %d on %s: %w", mtu, name, err)
	}
	ifr, _ = unix.NewIfreq(name)
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("netstackio: get flags of %s: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("netstackio: bring up %s: %w", name, err)
	}
	return nil
}

// offloadTUN is a TUN with virtio-net headers and TSO/checksum offload. It
// moves super-packets untouched: no splitting, no coalescing.
type offloadTUN struct {
	name   string
	mtu    int
	batch  int
	file   *os.File
	rc     syscall.RawConn
	closed atomic.Bool
	Counters

	// Read state, used by readFn inside rc.Read (Read is not reentrant).
	rbufs  [][]byte
	rsizes []int
	roff   int
	rn     int
	rerr   error
	readFn func(fd uintptr) bool

	// Write state, used by writeFn inside rc.Write.
	wbufs   [][]byte
	woff    int
	wi      int
	wn      int
	werr    error
	writeFn func(fd uintptr) bool
}

var _ Device = (*offloadTUN)(nil)

func openOffloadTUN(name string, opts TUNOptions) (*offloadTUN, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("netstackio: open /dev/net/tun: %w", err)
	}
	fail := func(what string, err error) (*offloadTUN, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("netstackio: %s %s: %w", what, name, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fail("name", err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fail("TUNSETIFF", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, virtio.HdrLen); err != nil {
		return fail("TUNSETVNETHDRSZ", err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, unix.TUN_F_CSUM|unix.TUN_F_TSO4|unix.TUN_F_TSO6); err != nil {
		return fail("TUNSETOFFLOAD", err)
	}
	if err := configureLink(name, opts.MTU); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// A non-blocking fd given to os.NewFile joins the runtime poller.
	f := os.NewFile(uintptr(fd), "/dev/net/tun:"+name)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	t := &offloadTUN{name: name, mtu: opts.MTU, batch: opts.BatchSize, file: f, rc: rc}
	t.readFn = t.readBatch
	t.writeFn = t.writeBatch
	return t, nil
}

// Read blocks for the first packet, then reads until EAGAIN or the batch is
// full; each read(2) delivers one virtio-net header and packet straight
// into bufs[i][offset-virtio.HdrLen:]. Each buffer must hold offset+MaxPacket
// bytes.
func (t *offloadTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if offset < virtio.HdrLen {
		return 0, fmt.Errorf("netstackio: offset %d < virtio.HdrLen", offset)
	}
	for i := range bufs {
		if len(bufs[i]) < offset+MaxPacket {
			return 0, fmt.Errorf("netstackio: read buffer %d holds %d bytes, needs offset+MaxPacket = %d", i, len(bufs[i]), offset+MaxPacket)
		}
	}
	t.rbufs, t.rsizes, t.roff, t.rn, t.rerr = bufs, sizes[:min(len(sizes), len(bufs))], offset, 0, nil
	err := t.rc.Read(t.readFn)
	n, rerr := t.rn, t.rerr
	t.rbufs, t.rsizes = nil, nil
	if n > 0 {
		t.Rx.Add(uint64(n))
		return n, nil
	}
	if t.closed.Load() {
		return 0, ErrClosed
	}
	if err == nil {
		err = rerr
	}
	return 0, err
}

func (t *offloadTUN) readBatch(fd uintptr) bool {
	for t.rn < len(t.rsizes) {
		b := t.rbufs[t.rn][t.roff-virtio.HdrLen:]
		n, err := unix.Read(int(fd), b)
		switch {
		case err == unix.EAGAIN:
			return t.rn > 0 // false: wait for readability, then retry
		case err == unix.EINTR:
			continue
		case err != nil:
			t.rerr = err
			return true
		case n <= virtio.HdrLen:
			t.Invalid.Add(1)
			continue
		}
		if virtio.Hdr(b).IsGSO() {
			t.RxGSO.Add(1)
		}
		t.rsizes[t.rn] = n - virtio.HdrLen
		t.rn++
	}
	return true
}

// Write hands each packet with its virtio-net header to the kernel with one
// write(2); GSO packets stay whole (the kernel segments them). Packets the
// kernel refuses as malformed are dropped and counted in Stats.Invalid and
// count as accepted.
func (t *offloadTUN) Write(bufs [][]byte, offset int) (int, error) {
	if offset < virtio.HdrLen {
		return 0, fmt.Errorf("netstackio: offset %d < virtio.HdrLen", offset)
	}
	if t.closed.Load() {
		return 0, ErrClosed
	}
	t.wbufs, t.woff, t.wi, t.wn, t.werr = bufs, offset, 0, 0, nil
	err := t.rc.Write(t.writeFn)
	n, werr := t.wn, t.werr
	t.wbufs = nil
	t.Tx.Add(uint64(n))
	if t.closed.Load() {
		return n, ErrClosed
	}
	if err == nil {
		err = werr
	}
	return n, err
}

func (t *offloadTUN) writeBatch(fd uintptr) bool {
	for t.wi < len(t.wbufs) {
		_, err := unix.Write(int(fd), t.wbufs[t.wi][t.woff-virtio.HdrLen:])
		switch err {
		case nil:
			t.TxSegs.Add(1)
		case unix.EAGAIN:
			return false
		case unix.EINTR:
			continue
		case unix.EINVAL, unix.EFAULT, unix.EMSGSIZE, unix.ENOMEM, unix.ENOBUFS:
			t.Invalid.Add(1)
		case unix.EIO:
			// The interface is down: the packet is lost like on a wire.
			t.Dropped.Add(1)
		default:
			t.werr = err
			return true
		}
		t.wi++
		t.wn++
	}
	return true
}

func (t *offloadTUN) BatchSize() int { return t.batch }
func (t *offloadTUN) MTU() int       { return t.mtu }
func (t *offloadTUN) Offload() bool  { return true }
func (t *offloadTUN) Name() string   { return t.name }

// Close removes the interface and unblocks a pending Read.
func (t *offloadTUN) Close() error {
	if t.closed.Swap(true) {
		return nil
	}
	return t.file.Close()
}

// plainTUN is a TUN opened by songgao/water: one packet per call.
type plainTUN struct {
	name   string
	mtu    int
	ifce   *water.Interface
	closed atomic.Bool
	Counters

	scratch []byte // Write side only
	emitFn  func([]byte) error
}

var _ Device = (*plainTUN)(nil)

func openPlainTUN(name string, opts TUNOptions) (*plainTUN, error) {
	ifce, err := water.New(water.Config{
		DeviceType:             water.TUN,
		PlatformSpecificParams: water.PlatformSpecificParams{Name: name},
	})
	if err != nil {
		return nil, fmt.Errorf("netstackio: open TUN %s: %w", name, err)
	}
	if err := configureLink(ifce.Name(), opts.MTU); err != nil {
		ifce.Close()
		return nil, err
	}
	t := &plainTUN{name: ifce.Name(), mtu: opts.MTU, ifce: ifce, scratch: make([]byte, MaxPacket)}
	t.emitFn = t.emit
	return t, nil
}

// Read reads one packet into bufs[0][offset:] with a zero virtio-net
// header in front.
func (t *plainTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if offset < virtio.HdrLen {
		return 0, fmt.Errorf("netstackio: offset %d < virtio.HdrLen", offset)
	}
	if len(bufs) == 0 || len(sizes) == 0 {
		return 0, nil
	}
	for {
		n, err := t.ifce.Read(bufs[0][offset:])
		if err != nil {
			if t.closed.Load() {
				return 0, ErrClosed
			}
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return 0, err
		}
		if n == 0 {
			t.Invalid.Add(1)
			continue
		}
		clear(bufs[0][offset-virtio.HdrLen : offset])
		sizes[0] = n
		t.Rx.Add(1)
		return 1, nil
	}
}

// Write writes each packet with one write(2), first finishing in software
// any checksum or segmentation its virtio-net header asks for. Packets that
// cannot be finished, or that the kernel refuses, are dropped and counted
// in Stats.Invalid and count as accepted.
func (t *plainTUN) Write(bufs [][]byte, offset int) (int, error) {
	if offset < virtio.HdrLen {
		return 0, fmt.Errorf("netstackio: offset %d < virtio.HdrLen", offset)
	}
	for i, b := range bufs {
		if t.closed.Load() {
			return i, ErrClosed
		}
		h := virtio.At(b, offset)
		var err error
		if !NeedsSoftwareOffload(h) {
			err = t.emit(b[offset:])
		} else if err = SoftwareOffload(h, b[offset:], t.scratch, t.emitFn); err != nil && !isFatal(err) {
			t.Invalid.Add(1)
			err = nil
		}
		if err != nil {
			if t.closed.Load() {
				return i, ErrClosed
			}
			return i, err
		}
		t.Tx.Add(1)
	}
	return len(bufs), nil
}

// fatalErr marks a write error that ends the device (as opposed to one bad
// packet).
type fatalErr struct{ error }

func (e fatalErr) Unwrap() error { return e.error }

func isFatal(err error) bool {
	var f fatalErr
	return errors.As(err, &f)
}

func (t *plainTUN) emit(pkt []byte) error {
	_, err := t.ifce.Write(pkt)
	switch {
	case err == nil:
		t.TxSegs.Add(1)
		return nil
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EFAULT), errors.Is(err, unix.EMSGSIZE),
		errors.Is(err, unix.ENOMEM), errors.Is(err, unix.ENOBUFS):
		t.Invalid.Add(1)
		return nil
	case errors.Is(err, unix.EIO):
		t.Dropped.Add(1)
		return nil
	}
	return fatalErr{err}
}

func (t *plainTUN) BatchSize() int { return 1 }
func (t *plainTUN) MTU() int       { return t.mtu }
func (t *plainTUN) Offload() bool  { return false }
func (t *plainTUN) Name() string   { return t.name }

// Close removes the interface and unblocks a pending Read.
func (t *plainTUN) Close() error {
	if t.closed.Swap(true) {
		return nil
	}
	return t.ifce.Close()
}
