package kvs

// Catch-up, driver side (docs/design-lifecycle.md, "Store side"): on a
// CATCHUP frame from the middlebox's order stream, one node of the joining
// DC pulls every record above the cursor from a node of the source DC
// (Config.Remotes), in tag order, page by page, and writes each record at
// its own DC's quorum with the record's own tag (replicas keep the higher
// tag, so nothing newer is ever overwritten). It reports PROGRESS at least
// every 500 ms and once at the end.
//
// Memory: catchupAhead pages requested ahead (on the WAN while the
// previous one is written locally), each bounded by the page limits, so
// at most catchupAhead+1 pages (20 MiB with the default 4 MiB pages) plus
// catchupApplyWindow of local batches.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/peerauth"
	"github.com/sdnkvs/sdnkvs/sequencer/orderwire"
	"golang.org/x/time/rate"
)

// ProgressEvery is the longest interval between two PROGRESS frames of a
// running job.
const ProgressEvery = 500 * time.Millisecond

const (
	catchupAhead      = 4 // pages requested ahead of the one being written
	catchupReadTimout = 30 * time.Second
)

// catchupDriver holds the node's running job (at most one).
type catchupDriver struct {
	mu  sync.Mutex
	job *catchupJob
}

type catchupJob struct {
	id     uint64
	source string
	verify bool   // run a verify pass after the incremental one (catchup_verify.go)
	bound  uint64 // the verify pass's bound (a sequencer G)
	srcIdx int    // index in --remote of the source node that served the last page
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	cursor    Tag
	keys      uint64
	bytes     uint64
	remaining uint64
}

func (j *catchupJob) progress(state uint8) orderwire.Frame {
	j.mu.Lock()
	defer j.mu.Unlock()
	return orderwire.Frame{Type: orderwire.Progress, Job: j.id, State: state, Keys: j.keys, Bytes: j.bytes,
		Remaining: j.remaining, G: j.cursor.Counter, W: j.cursor.Writer}
}

// errCatchupLocal marks a failure of the joining DC's own quorum (the job
// fails; the middlebox retries later from the cursor).
var errCatchupLocal = errors.New("local quorum write failed")

// StartCatchup starts job id: copy from DC source every record with tag
// above cursor. It replaces a running job. report receives every PROGRESS
// frame (it must not block for long).
func (n *Node) StartCatchup(id uint64, source string, cursor Tag, report func(orderwire.Frame)) {
	n.startCatchup(&catchupJob{id: id, source: source, cursor: cursor}, report)
}

// StartCatchupVerify starts job id as StartCatchup does, followed by a
// verify pass: the whole store is compared with the source DC's and every
// record at or below sequencer G bound that differs is repaired to the
// source's (catchup_verify.go).
func (n *Node) StartCatchupVerify(id uint64, source string, cursor Tag, bound uint64, report func(orderwire.Frame)) {
	n.startCatchup(&catchupJob{id: id, source: source, cursor: cursor, verify: true, bound: bound}, report)
}

func (n *Node) startCatchup(j *catchupJob, report func(orderwire.Frame)) {
	id := j.id
	d := &n.catchup
	d.mu.Lock()
	defer d.mu.Unlock()
	select {
	case <-n.closing:
		return // the node is stopping: the middlebox asks another node
	default:
	}
	if old := d.job; old != nil {
		old.cancel()
		<-old.done
		n.log.Info("catch-up: job replaced", "old", old.id, "new", id)
	}
	ctx, cancel := context.WithCancel(context.Background())
	j.cancel, j.done, j.remaining = cancel, make(chan struct{}), ^uint64(0)
	d.job = j
	n.catchStats.Jobs.Add(1)
	n.catchStats.Running.Store(1)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.runCatchup(ctx, j, report)
		close(j.done) // before taking d.mu: StartCatchup waits for it holding d.mu
		d.mu.Lock()
		if d.job == j {
			d.job = nil
			n.catchStats.Running.Store(0)
			n.catchStats.setRate(0)
		}
		d.mu.Unlock()
	}()
}

// StopCatchup stops job id if it runs (no final PROGRESS: the middlebox
// asked for the stop).
func (n *Node) StopCatchup(id uint64) {
	d := &n.catchup
	d.mu.Lock()
	j := d.job
	d.mu.Unlock()
	if j != nil && j.id == id {
		j.cancel()
		<-j.done
		n.log.Info("catch-up: job stopped", "job", id)
	}
}

func (n *Node) runCatchup(ctx context.Context, j *catchupJob, report func(orderwire.Frame)) {
	go func() {
		select {
		case <-n.closing:
			j.cancel()
		case <-ctx.Done():
		}
	}()
	start := time.Now()
	// PROGRESS ticker.
	tick := make(chan struct{})
	go func() {
		defer close(tick)
		t := time.NewTicker(ProgressEvery)
		defer t.Stop()
		var lastBytes uint64
		last := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				f := j.progress(orderwire.JobRunning)
				n.catchStats.setRate(float64(f.Bytes-lastBytes) / now.Sub(last).Seconds())
				lastBytes, last = f.Bytes, now
				report(f)
			}
		}
	}()
	err := n.pullJob(ctx, j)
	if err == nil && j.verify {
		err = n.verifyJob(ctx, j)
	}
	state := orderwire.JobDone
	switch {
	case ctx.Err() != nil:
		j.cancel()
		<-tick
		return // stopped, replaced or closing: nothing to report
	case err != nil:
		state = orderwire.JobFailed
		n.catchStats.JobsFailed.Add(1)
		n.log.Warn("catch-up: job failed", "job", j.id, "source", j.source, "err", err)
	default:
		n.catchStats.JobsDone.Add(1)
	}
	j.cancel()
	<-tick
	f := j.progress(state)
	if state == orderwire.JobDone {
		f.Remaining = 0
		n.log.Info("catch-up: job done", "job", j.id, "source", j.source, "keys", f.Keys, "bytes", f.Bytes, "took", time.Since(start))
	}
	report(f)
}

// pullJob pulls until the tail, moving to the source DC's next node when
// one fails; it gives up after every node failed in a row.
func (n *Node) pullJob(ctx context.Context, j *catchupJob) error {
	addrs := n.cfg.Remotes[j.source]
	if len(addrs) == 0 {
		return fmt.Errorf("no --remote addresses for source DC %q", j.source)
	}
	pace := n.newCatchupPace()
	fails := 0
	var errs []error
	for i := 0; ; i++ {
		addr := addrs[i%len(addrs)]
		progressed, err := n.pullFrom(ctx, j, addr, pace)
		if err == nil {
			j.srcIdx = i % len(addrs)
			return nil
		}
		if ctx.Err() != nil || errors.Is(err, errCatchupLocal) {
			return err
		}
		n.catchStats.Failures.Add(1)
		n.log.Warn("catch-up: source node failed; trying the next one", "job", j.id, "source", addr, "err", err)
		if progressed {
			fails, errs = 0, nil
		}
		fails++
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
		if fails >= len(addrs) {
			return fmt.Errorf("every node of DC %q failed: %w", j.source, errors.Join(errs...))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// newCatchupPace is a job's pace: its --catchup-rate bucket (nil:
// unlimited) and its --catchup-target window.
func (n *Node) newCatchupPace() *catchupPace {
	p := &catchupPace{win: newApplyWindow(n.cfg.CatchupTarget)}
	if n.cfg.CatchupRate > 0 {
		// A burst of one batch: pages arrive whole, and a larger bucket
		// let one be written at full speed after a quiet spell.
		p.limiter = rate.NewLimiter(rate.Limit(n.cfg.CatchupRate), int(min(n.cfg.CatchupRate, catchupBatchBytes)))
	}
	return p
}

// dialCatchup connects to a source node's peer port as a dc-reader and
// sends early (the stream's opening requests) with the handshake's proof,
// once the node has proved it holds the cluster secret and is a node: the
// first page leaves the source a round trip sooner than after the welcome.
func (n *Node) dialCatchup(ctx context.Context, addr string, early []byte) (net.Conn, error) {
	d := net.Dialer{Timeout: 3 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if n.cfg.PeerSecret != nil {
		self := peerauth.Hello{Cluster: CatchupCluster, Role: roleDCReader, ID: uint64(n.cfg.ID)}
		_, err = peerauth.ClientEarly(c, n.cfg.PeerSecret, self, time.Now().Add(handshakeTimeout), func(p peerauth.Hello) ([]byte, error) {
			if p.Role != peerauth.RoleNode {
				return nil, fmt.Errorf("%s answers as %q, not a node", addr, p.Role)
			}
			return early, nil
		})
	} else {
		_, err = c.Write(early)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// pullFrom runs the stream against one source node until the tail (nil),
// a failure, or ctx's end. progressed reports whether a page was applied.
func (n *Node) pullFrom(ctx context.Context, j *catchupJob, addr string, pace *catchupPace) (progressed bool, err error) {
	if cc := n.takeCatchupConn(addr); cc != nil {
		n.catchStats.Reused.Add(1)
		progressed, err := n.pullOn(ctx, j, cc, pace, false)
		if err == nil || progressed || ctx.Err() != nil || errors.Is(err, errCatchupLocal) {
			return progressed, err
		}
		// The kept connection went stale (the source closed it): dial.
	}
	c, err := n.dialCatchup(ctx, addr, n.catchupOpening(j, 1))
	if err != nil {
		return false, err
	}
	return n.pullOn(ctx, j, &catchupConn{addr: addr, c: c, fr: newFrameReader(c, maxCatchupFrame), nextID: 1}, pace, true)
}

// catchupOpening is a stream's opening: the start at the job's cursor
// (with the stub bound of the range this DC copied, catchup_stub.go) as
// request first, and catchupAhead-1 nexts.
func (n *Node) catchupOpening(j *catchupJob, first uint64) []byte {
	pageBytes, pageRecs := n.cfg.CatchupPageBytes, n.cfg.CatchupPageRecords
	if pageBytes <= 0 {
		pageBytes = CatchupPageBytes
	}
	if pageRecs <= 0 {
		pageRecs = CatchupPageRecords
	}
	j.mu.Lock()
	base := j.cursor
	j.mu.Unlock()
	start := append([]byte{catchupStart}, AppendTag(nil, base)...)
	start = binary.BigEndian.AppendUint32(start, uint32(pageBytes))
	start = binary.BigEndian.AppendUint32(start, uint32(pageRecs))
	if stubTo := n.catchCover.stubBound(base); !stubTo.IsZero() {
		start = AppendTag(start, stubTo)
	}
	wbuf := appendReadReq(nil, kindCatchup, first, start)
	for id := first + 1; id < first+catchupAhead; id++ {
		wbuf = appendReadReq(wbuf, kindCatchup, id, []byte{catchupNext})
	}
	return wbuf
}

// pullOn runs the stream on cc (closing it, or parking it after the tail).
// opened: the stream's opening (catchupOpening at cc.nextID) was sent with
// the handshake. Answers come in request order: pages (catchupAhead asked
// ahead) and the fetches of stub pages' missing records (catchup_stub.go).
// The cursor moves to a page's end once the page and every fetch asked
// before its end are written.
func (n *Node) pullOn(ctx context.Context, j *catchupJob, cc *catchupConn, pace *catchupPace, opened bool) (progressed bool, err error) {
	c := cc.c
	keep := false
	defer func() {
		if !keep {
			c.Close()
		}
	}()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	// The job's cursor moves only in this function, so it is the cursor
	// the opening (sent here or with the handshake) started at.
	j.mu.Lock()
	base := j.cursor
	j.mu.Unlock()
	first := cc.nextID
	if !opened {
		if _, err := c.Write(n.catchupOpening(j, first)); err != nil {
			return false, err
		}
	}
	var wbuf []byte
	nextID := first + catchupAhead
	send := func(payload []byte) (uint64, error) {
		id := nextID
		nextID++
		wbuf = appendReadReq(wbuf[:0], kindCatchup, id, payload)
		_, err := c.Write(wbuf)
		return id, err
	}
	fetches := map[uint64]bool{} // ids of fetches not answered yet
	var held Tag                 // a page end waiting for fetches
	tail := false
	// advance moves the cursor to end (zero: stays), counts recs records
	// of size bytes copied, and takes done records off the remaining
	// estimate (after setting it to remaining, unless ^0).
	advance := func(end Tag, recs, size, done int, remaining uint64) {
		j.mu.Lock()
		if end.Compare(j.cursor) > 0 {
			j.cursor = end
		}
		j.keys += uint64(recs)
		j.bytes += uint64(size)
		if remaining != ^uint64(0) {
			j.remaining = remaining
		}
		if j.remaining != ^uint64(0) {
			j.remaining -= min(j.remaining, uint64(done))
		}
		j.mu.Unlock()
		if !end.IsZero() {
			n.catchCover.note(base, end)
		}
	}
	var r response
	var fetch []byte
	for want := first; want < nextID; want++ {
		c.SetReadDeadline(time.Now().Add(catchupReadTimout))
		body, err := cc.fr.next()
		if err == nil && (decodeResp(body, &r) != nil || r.kind != kindCatchup || r.id != want) {
			err = fmt.Errorf("malformed catch-up answer (kind %d, id %d, want %d)", r.kind, r.id, want)
		}
		if err != nil && tail && len(fetches) == 0 {
			return progressed, nil // an answer to a page asked beyond the tail: the pass is done, the connection is not kept
		}
		if err != nil {
			return progressed, fmt.Errorf("reading a page: %w", err)
		}
		if fetches[want] {
			delete(fetches, want)
			if r.status != statusOK {
				return progressed, fmt.Errorf("source refused a stub fetch: %s", r.val)
			}
			recs, count, err := n.fetchedRecords(r.val)
			if err != nil {
				return progressed, err
			}
			size := 0
			if count > 0 {
				if size, err = n.applyChecked(ctx, recs, pace); err != nil {
					return progressed, err
				}
			}
			n.catchStats.StubFetched.Add(uint64(count))
			n.catchStats.Records.Add(uint64(count))
			n.catchStats.Bytes.Add(uint64(size))
			progressed = true
			end := Tag{}
			if len(fetches) == 0 {
				end, held = held, Tag{}
			}
			advance(end, count, size, 0, ^uint64(0))
			continue
		}
		if tail {
			continue // answers to pages asked beyond the tail
		}
		if r.status != statusOK {
			return progressed, fmt.Errorf("source refused: %s", r.val)
		}
		if len(r.val) < TagSize+8 {
			return progressed, errBadFrame
		}
		end := DecodeTag(r.val)
		remaining := binary.BigEndian.Uint64(r.val[TagSize:])
		tail = r.flags&flagTail != 0
		if !tail {
			// Ask for the page after the one in flight before writing this
			// one: the WAN round trip overlaps the local writes.
			if _, err := send([]byte{catchupNext}); err != nil {
				return progressed, err
			}
		}
		recs := r.val[TagSize+8:]
		count, size, done := 0, 0, 0
		if r.flags&flagStub != 0 {
			if done, err = n.checkBatch(recs, false); err != nil {
				return progressed, fmt.Errorf("stub page: %w", err)
			}
			lacking, err := n.stubsLacking(recs)
			if err != nil {
				return progressed, fmt.Errorf("stub page: %w", err)
			}
			n.catchStats.Stubs.Add(uint64(done))
			for from, per := 0, n.fetchKeys(); from < len(lacking); from += per {
				fetch = appendFetchReq(fetch[:0], lacking[from:min(from+per, len(lacking))])
				id, err := send(fetch)
				if err != nil {
					return progressed, err
				}
				fetches[id] = true
			}
		} else {
			if count, size, err = n.applyPage(ctx, recs, pace); err != nil {
				return progressed, err
			}
			done = count
		}
		progressed = true
		n.catchStats.Pages.Add(1)
		n.catchStats.Records.Add(uint64(count))
		n.catchStats.Bytes.Add(uint64(size))
		if len(fetches) > 0 {
			end, held = Tag{}, end
		}
		advance(end, count, size, done, remaining)
	}
	// Every answer read, the tail among them: keep the connection for the
	// next pass (catchup_conn.go).
	c.SetReadDeadline(time.Time{})
	if stop() {
		keep = true
		cc.nextID = nextID
		n.parkCatchupConn(cc)
	}
	return progressed, nil
}

// applyPage checks a page's records and writes them at the local quorum,
// each with its own tag (catchup_apply.go); it returns records and bytes
// (keys and values).
func (n *Node) applyPage(ctx context.Context, b []byte, pace *catchupPace) (int, int, error) {
	count, err := n.checkBatch(b, false)
	if err != nil {
		return 0, 0, fmt.Errorf("page: %w", err)
	}
	size, err := n.applyChecked(ctx, b, pace)
	if err != nil {
		return 0, 0, err
	}
	return count, size, nil
}

// applyChecked writes validated records (a page's, or a stub fetch's) at
// the local quorum and returns their bytes (keys and values).
func (n *Node) applyChecked(ctx context.Context, b []byte, pace *catchupPace) (int, error) {
	size := 0
	var rec scanRecord
	for r := b; len(r) > 0; {
		r, _ = nextScanRecord(r, &rec)
		size += len(rec.key) + len(rec.val)
	}
	if err := n.applyRecords(ctx, b, Tag{}, pace); err != nil {
		return 0, err
	}
	return size, nil
}
