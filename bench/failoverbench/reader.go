//go:build linux

package failoverbench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sdnkvs/sdnkvs/bench/resp"
	"github.com/sdnkvs/sdnkvs/bench/scenario"
)

// The Fig. 6 reader keeps one anycast connection busy and pipelined:
//
//	writer goroutine ── MGET marker,key (next one when the previous reply is complete)
//	                 └─ PING every PingEvery ──────────────► VIP:6380 ─► one node
//	reader goroutine ◄── replies, in the order sent (FIFO of pending commands)
//
// The PINGs are client data the server must acknowledge while a large
// reply flows, as the paper's client kept sending: after a cut the
// client's kernel retransmits them, which is what the paper's Algorithm 1
// counts (a client that only receives never retransmits). Every reply is
// timestamped at its first byte (service resumed) and at its end.

// Command kinds in Sample.Kind.
const (
	KindMGET = "MGET"
	KindPING = "PING"
)

// binWidth is the width of a throughput bin.
const binWidth = 100 * time.Millisecond

// arrival is one read from the connection: the stream offset just past
// the bytes it returned, and when.
type arrival struct {
	end int64
	at  time.Duration
}

// timedConn records when the bytes of a connection arrived and adds them
// to a run's throughput bins. Read is called by one goroutine only (the
// reader); the other methods are the embedded connection's. Not safe for
// concurrent reads.
type timedConn struct {
	net.Conn
	start time.Time
	total int64
	ring  [256]arrival
	n     int
	bins  []int64 // received bytes per binWidth since start; not owned
}

func (c *timedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		now := time.Since(c.start)
		c.total += int64(n)
		c.ring[c.n%len(c.ring)] = arrival{end: c.total, at: now}
		c.n++
		if b := int(now / binWidth); b >= 0 && b < len(c.bins) {
			c.bins[b] += int64(n)
		}
	}
	return n, err
}

// arrivedAt returns when the stream byte at offset off arrived, since
// start: the time of the read that returned it, or of the oldest read
// remembered if that one is forgotten (an upper bound); now if it has not
// arrived.
func (c *timedConn) arrivedAt(off int64) time.Duration {
	for i := max(0, c.n-len(c.ring)); i < c.n; i++ {
		if a := c.ring[i%len(c.ring)]; a.end > off {
			return a.at
		}
	}
	return time.Since(c.start)
}

// reply is what the reader keeps of one RESP reply.
type reply struct {
	kind   byte   // type byte of the top-level reply
	text   string // top-level simple string or error (at most maxText bytes)
	first  string // the first bulk string if short (MGET: the DC marker)
	nbulk  int    // bulk strings in the reply
	last   int    // length of the last bulk string (MGET: the value)
	nbytes int    // bulk payload bytes in all
}

const (
	maxText  = 128
	maxFirst = 64
)

// replyOf keeps of rp what the reader needs.
func replyOf(rp resp.Reply) reply {
	r := reply{kind: rp.Kind}
	if rp.Kind == '+' || rp.Kind == '-' {
		r.text = string(rp.Str[:min(len(rp.Str), maxText)])
	}
	r.addBulks(rp)
	return r
}

func (r *reply) addBulks(rp resp.Reply) {
	switch {
	case rp.Kind == '$' && !rp.Nil:
		if r.nbulk == 0 && len(rp.Str) <= maxFirst {
			r.first = string(rp.Str)
		}
		r.nbulk++
		r.last = len(rp.Str)
		r.nbytes += len(rp.Str)
	case rp.Kind == '*':
		for _, e := range rp.Elems {
			r.addBulks(e)
		}
	}
}

// pending is one command sent and not yet answered.
type pending struct {
	kind string
	sent time.Duration
}

// readStats is what readLoop reports besides the samples.
type readStats struct {
	resets, reconnects int
	// lost is when (since the start) each connection failed (reset, EOF
	// or any other error) while the run was still going.
	lost []time.Duration
	// errs are the first few distinct reply or connection errors.
	errs []string
}

func (s *readStats) noteErr(e string) {
	for _, x := range s.errs {
		if x == e {
			return
		}
	}
	if len(s.errs) < 5 {
		s.errs = append(s.errs, e)
	}
}

// progress is what readLoop tells its run while it goes.
type progress struct {
	replies atomic.Int64
	farAt   atomic.Int64 // first reply byte from the far DC, ns since start; 0: none yet
}

var (
	mgetCmd = []byte("*3\r\n$4\r\nMGET\r\n$" + strconv.Itoa(len(scenario.MarkerKey)) + "\r\n" + scenario.MarkerKey + "\r\n$" + strconv.Itoa(len(readKey)) + "\r\n" + readKey + "\r\n")
	pingCmd = []byte("*1\r\n$4\r\nPING\r\n")
)

// readLoop reads over one anycast connection at a time until ctx ends,
// reconnecting to the VIP when the connection fails. Received bytes are
// added to bins (indexed by binWidth since start).
func readLoop(ctx context.Context, env *scenario.Env, start time.Time, pingEvery time.Duration, pr *progress, bins []int64) ([]Sample, readStats) {
	var st readStats
	var samples []Sample
	far := env.Far()
	for conns := 0; ctx.Err() == nil; {
		dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		conn, err := env.DialClient(dctx, scenario.ReadPort)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				st.noteErr("dial: " + err.Error())
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
			continue
		}
		if conns > 0 {
			st.reconnects++
		}
		tc := &timedConn{Conn: conn, start: start, bins: bins}
		var err2 error
		samples, err2 = runConn(ctx, tc, conns, pingEvery, far, pr, samples)
		conns++
		if ctx.Err() == nil {
			st.lost = append(st.lost, time.Since(start))
			if scenario.IsReset(err2) {
				st.resets++
			} else {
				st.noteErr(err2.Error())
			}
		}
	}
	return samples, st
}

// runConn drives one connection until it fails or ctx ends, appending a
// sample per reply. It closes conn.
func runConn(ctx context.Context, conn *timedConn, id int, pingEvery time.Duration, far string, pr *progress, samples []Sample) ([]Sample, error) {
	var (
		mu    sync.Mutex
		queue []pending
	)
	stop := make(chan struct{})
	wdone := make(chan struct{})
	next := make(chan struct{}, 1)
	unblock := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		unblock()
		close(stop)
		conn.Close()
		<-wdone
	}()
	go func() {
		defer close(wdone)
		send := func(kind string, cmd []byte) error {
			mu.Lock()
			queue = append(queue, pending{kind: kind, sent: time.Since(conn.start)})
			mu.Unlock()
			_, err := conn.Write(cmd)
			return err
		}
		// The first command is an MGET, so the first reply on every
		// connection names its DC.
		if send(KindMGET, mgetCmd) != nil {
			return
		}
		var tick <-chan time.Time
		if pingEvery > 0 {
			t := time.NewTicker(pingEvery)
			defer t.Stop()
			tick = t.C
		}
		for {
			var err error
			select {
			case <-stop:
				return
			case <-next:
				err = send(KindMGET, mgetCmd)
			case <-tick:
				err = send(KindPING, pingCmd)
			}
			if err != nil {
				return
			}
		}
	}()

	br := bufio.NewReaderSize(conn, 64<<10)
	dc := ""
	for {
		if _, err := br.Peek(1); err != nil {
			return samples, err
		}
		first := conn.arrivedAt(conn.total - int64(br.Buffered()))
		rp, err := resp.ReadReply(br)
		if err != nil {
			return samples, err
		}
		r := replyOf(rp)
		done := time.Since(conn.start)
		mu.Lock()
		if len(queue) == 0 {
			mu.Unlock()
			return samples, fmt.Errorf("%w: reply %q with no command pending", resp.ErrProto, r.kind)
		}
		p := queue[0]
		queue = queue[1:]
		mu.Unlock()
		s := Sample{Kind: p.kind, Sent: p.sent, First: first, Done: done, Conn: id}
		switch p.kind {
		case KindMGET:
			if r.kind == '*' && r.nbulk == 2 {
				dc = r.first
				s.Bytes = r.last
			} else if r.kind == '-' {
				return samples, fmt.Errorf("MGET: error reply %q", r.text)
			} else {
				return samples, fmt.Errorf("MGET: unexpected reply type %q with %d bulk strings", r.kind, r.nbulk)
			}
			select {
			case next <- struct{}{}:
			default:
			}
		case KindPING:
			if r.kind != '+' || r.text != "PONG" {
				return samples, fmt.Errorf("PING: unexpected reply %q %q", r.kind, r.text)
			}
		}
		// Every reply on a connection comes from the node that sent the
		// first MGET reply (anycast flows keep their server).
		s.DC = dc
		samples = append(samples, s)
		pr.replies.Add(1)
		if dc == far {
			pr.farAt.CompareAndSwap(0, int64(first))
		}
	}
}
