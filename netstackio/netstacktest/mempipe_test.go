package netstacktest

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/testenv"
	"github.com/sdnkvs/sdnkvs/netstackio"
	"github.com/sdnkvs/sdnkvs/netstackio/packet/packettest"
	"github.com/sdnkvs/sdnkvs/netstackio/virtio"
)

const testOff = 16 // headroom used by the tests (>= virtio.HdrLen)

func readBufs(n, size int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, testOff+size)
	}
	return bufs, make([]int, n)
}

func numbered(i, size int) []byte {
	b := make([]byte, testOff+size)
	for j := testOff; j < len(b); j++ {
		b[j] = byte(i + j)
	}
	return b
}

func TestMemPipeBatchesAndCopies(t *testing.T) {
	a, b := MemPipe(PipeOptions{})
	defer a.Close()
	defer b.Close()
	var in [][]byte
	for i := 0; i < 10; i++ {
		in = append(in, numbered(i, 100+i))
	}
	if n, err := a.Write(in, testOff); n != 10 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	// The caller owns its buffers: scribbling on them after Write must not
	// change what the peer reads.
	want := make([][]byte, len(in))
	for i := range in {
		want[i] = append([]byte(nil), in[i][testOff:]...)
		clear(in[i])
	}
	bufs, sizes := readBufs(64, 2000)
	for i := range bufs {
		for j := range bufs[i] {
			bufs[i][j] = 0xee // the header must come back zeroed
		}
	}
	n, err := b.Read(bufs, sizes, testOff)
	if err != nil || n != 10 {
		t.Fatalf("Read = %d, %v; want all 10 queued packets in one batch", n, err)
	}
	for i := 0; i < n; i++ {
		if got := bufs[i][testOff : testOff+sizes[i]]; !bytes.Equal(got, want[i]) {
			t.Fatalf("packet %d differs", i)
		}
		if h := virtio.At(bufs[i], testOff); !bytes.Equal(h, make([]byte, virtio.HdrLen)) {
			t.Fatalf("packet %d: vnet header %x, want zeros", i, []byte(h))
		}
	}
	// A small batch returns only what fits, the rest stays queued.
	a.Write(in[:5], testOff)
	if n, _ := b.Read(bufs[:2], sizes[:2], testOff); n != 2 {
		t.Fatalf("Read with 2 buffers = %d", n)
	}
	if n, _ := b.Read(bufs, sizes, testOff); n != 3 {
		t.Fatalf("second Read = %d, want the remaining 3", n)
	}
	if st := a.(netstackio.StatsReporter).Stats(); st.TxPackets != 15 || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestMemPipeBoundedQueueDropsAndCounts(t *testing.T) {
	a, b := MemPipe(PipeOptions{QueueLen: 1024})
	defer a.Close()
	defer b.Close()
	pkt := [][]byte{numbered(1, 60)}
	for i := 0; i < 1024+100; i++ {
		if _, err := a.Write(pkt, testOff); err != nil {
			t.Fatal(err)
		}
	}
	if st := a.(netstackio.StatsReporter).Stats(); st.Dropped != 100 || st.TxSegs != 1024 {
		t.Fatalf("stats %+v: want 100 dropped and 1024 queued", st)
	}
	bufs, sizes := readBufs(256, 100)
	total := 0
	for total < 1024 {
		n, err := b.Read(bufs, sizes, testOff)
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	if total != 1024 {
		t.Fatalf("read %d packets, want 1024", total)
	}
	// Oversized packets are refused and counted, not truncated.
	if _, err := a.Write([][]byte{numbered(2, 1501)}, testOff); err != nil {
		t.Fatal(err)
	}
	if st := a.(netstackio.StatsReporter).Stats(); st.Invalid != 1 {
		t.Fatalf("oversize not counted: %+v", st)
	}
}

func TestMemPipeCloseUnblocksReader(t *testing.T) {
	a, b := MemPipe(PipeOptions{})
	defer a.Close()
	errc := make(chan error, 1)
	go func() {
		bufs, sizes := readBufs(4, 1500)
		_, err := b.Read(bufs, sizes, testOff)
		errc <- err
	}()
	b.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, netstackio.ErrClosed) {
			t.Fatalf("Read after Close: %v, want netstackio.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
	if _, err := b.Write([][]byte{numbered(0, 60)}, testOff); !errors.Is(err, netstackio.ErrClosed) {
		t.Fatalf("Write on closed end: %v", err)
	}
	// The peer's writes towards the closed end are dropped and counted.
	if _, err := a.Write([][]byte{numbered(0, 60)}, testOff); err != nil {
		t.Fatalf("peer Write: %v", err)
	}
	if st := a.(netstackio.StatsReporter).Stats(); st.Dropped != 1 {
		t.Fatalf("peer stats %+v: want 1 dropped", st)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestMemPipeSegmentsGSOInSoftware(t *testing.T) {
	a, b := MemPipe(PipeOptions{MTU: 1500})
	defer a.Close()
	defer b.Close()
	r := rand.New(rand.NewPCG(9, 10))
	h, pkt := packettest.TCPPacket(r, false, 10000, 0, true, 1460)
	if n, err := a.Write([][]byte{packettest.WithHeadroom(h, pkt, testOff)}, testOff); n != 1 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	bufs, sizes := readBufs(64, 1500)
	n, err := b.Read(bufs, sizes, testOff)
	if err != nil {
		t.Fatal(err)
	}
	if n != 7 { // ceil(10000/1460)
		t.Fatalf("%d segments, want 7", n)
	}
	var payload []byte
	for i := 0; i < n; i++ {
		seg := bufs[i][testOff : testOff+sizes[i]]
		if len(seg) > 1500 || !packettest.TCPChecksumOK(seg) {
			t.Fatalf("segment %d: len %d, checksum ok %v", i, len(seg), packettest.TCPChecksumOK(seg))
		}
		payload = append(payload, seg[40:]...)
	}
	if !bytes.Equal(payload, pkt[40:]) {
		t.Fatal("payload differs after segmentation")
	}
	// A bad offload header is dropped and counted; the pipe keeps working.
	h.SetGSOSize(0)
	a.Write([][]byte{packettest.WithHeadroom(h, pkt, testOff)}, testOff)
	if st := a.(netstackio.StatsReporter).Stats(); st.Invalid != 1 {
		t.Fatalf("bad header not counted: %+v", st)
	}
}

func TestMemPipeSteadyStateAllocatesNothing(t *testing.T) {
	a, b := MemPipe(PipeOptions{})
	defer a.Close()
	defer b.Close()
	out := make([][]byte, 32)
	for i := range out {
		out[i] = numbered(i, 1400)
	}
	bufs, sizes := readBufs(32, 1500)
	if allocs := testing.AllocsPerRun(200, func() {
		a.Write(out, testOff)
		for got := 0; got < len(out); {
			n, err := b.Read(bufs, sizes, testOff)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	}); allocs != 0 {
		t.Fatalf("%v allocations per batch of 32 packets, want 0", allocs)
	}
}

func TestMemPipeConcurrentReaderWriter(t *testing.T) {
	a, b := MemPipe(PipeOptions{QueueLen: 4096})
	defer a.Close()
	const total = 20000
	done := make(chan int, 1)
	go func() {
		bufs, sizes := readBufs(64, 1500)
		got, next := 0, 0
		for got < total {
			n, err := b.Read(bufs, sizes, testOff)
			if err != nil {
				break
			}
			for i := 0; i < n; i++ {
				// Packets keep their order.
				if int(bufs[i][testOff])|int(bufs[i][testOff+1])<<8 != next&0xffff {
					done <- -1
					return
				}
				next++
			}
			got += n
		}
		done <- got
	}()
	sent := 0
	pkt := [][]byte{make([]byte, testOff+100)}
	for sent < total {
		pkt[0][testOff] = byte(sent)
		pkt[0][testOff+1] = byte(sent >> 8)
		a.Write(pkt, testOff)
		sent++
		// Back off while the queue is nearly full, so nothing is dropped.
		testenv.WaitFor(t, 10*time.Second, "queue space", func() bool {
			st := a.(netstackio.StatsReporter).Stats()
			return st.Dropped == 0 && int(st.TxSegs)-int(b.(netstackio.StatsReporter).Stats().RxPackets) < 4000
		})
	}
	select {
	case got := <-done:
		if got != total {
			t.Fatalf("reader got %d packets (or out of order: -1), want %d", got, total)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("reader did not finish")
	}
	b.Close()
}
