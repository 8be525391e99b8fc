package kvs

// RESP front: one goroutine per client connection.
//
//	read -> parse every complete command in the buffer -> batch
//	batch -> groups of commands on distinct keys: start all their quorum ops,
//	         then wait for them in order and append the replies
//	replies -> one write per batch
//
// Pipelined commands on distinct keys therefore run concurrently, while a
// command on a key already used earlier in its group waits for that group, so
// every connection keeps Redis's in-order semantics.

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"strings"
	"time"

	"github.com/tidwall/redcon"
)

type cmdKind uint8

const (
	cmdImmediate cmdKind = iota // answered without quorum ops
	cmdGet
	cmdSet
	cmdDel
	cmdExists
	cmdMGet
	cmdMSet
	cmdTooBig
	cmdQuit
	cmdOK // answered +OK (AUTH that succeeded)
)

// batchCmd is one parsed command of a batch; its args alias the read buffer.
type batchCmd struct {
	kind     cmdKind
	argStart int // into clientConn.argv
	argEnd   int
	opStart  int // into clientConn.ops
	opEnd    int
	distinct int // DEL: distinct keys
	err      string
	end      uint64 // stream offset just past the command (sequencing)
	tag      Tag    // the stamped tag of a sequenced write
	stamped  bool
}

// clientConn is the state of one client connection. Not safe for
// concurrent use: only its goroutine touches it.
type clientConn struct {
	n      *Node
	c      net.Conn
	p      *respParser
	buf    []byte
	out    []byte
	argv   [][]byte
	cmds   []batchCmd
	ops    []*op
	hashes []uint64
	dl     deadline
	seed   maphash.Seed
	quit   bool
	sq     seqConn
	authed bool // AUTH succeeded (or no password is required)
	dead   bool // a write failed: the connection is closed
}

const maxBatch = 1024

// outFlush is the size at which replies are written out in the middle of a
// batch, so a connection's output buffer stays near this size however many
// replies its pipeline asks for; a client that does not read them is
// closed when a write misses Config.WriteTimeout (Redis's
// client-output-buffer-limit, with time instead of bytes as the measure).
const outFlush = 256 << 10

// flush writes the pending replies with the write deadline; a client that
// misses it is closed.
func (cc *clientConn) flush() {
	if len(cc.out) == 0 || cc.dead {
		cc.out = cc.out[:0]
		return
	}
	cc.c.SetWriteDeadline(time.Now().Add(cc.n.cfg.WriteTimeout))
	if _, err := cc.c.Write(cc.out); err != nil {
		cc.dead = true
		cc.n.stats.SlowClients.Add(1)
		cc.c.Close()
	}
	if cap(cc.out) > 1<<20 {
		cc.out = nil
	} else {
		cc.out = cc.out[:0]
	}
}

func (n *Node) serveClient(c net.Conn) {
	// A forked connection (announced on the order stream) does not count
	// toward its address's bound, and is spared over either bound (up to
	// forkedClientsFactor x MaxClients): every DC gets it, so refusing it
	// here while the other DCs serve it is a reply mismatch, and whoever
	// filled this node with anycast or direct connections would take its
	// DC out of service. The middlebox bounds forked flows (--max-flows,
	// --max-flows-per-source).
	ip := addrOf(c)
	forked := n.forkedConn(c, time.Time{})
	perIP := 0
	if !forked {
		perIP = n.perIP.add(ip)
	}
	open := n.stats.Clients.Add(1)
	overIP := !forked && n.cfg.MaxClientsPerIP > 0 && perIP > n.cfg.MaxClientsPerIP
	if open > int64(n.cfg.MaxClients) || overIP {
		// The OPEN travels on another connection than the SYN: wait a
		// little for it before refusing.
		spared := open <= int64(forkedClientsFactor*n.cfg.MaxClients) &&
			(forked || n.forkedConn(c, time.Now().Add(forkedOpenWait)))
		if !forked {
			n.perIP.done(ip) // refused, or forked after all: not counted
		}
		if !spared {
			n.stats.Clients.Add(-1)
			msg := "ERR max number of clients reached"
			if overIP && open <= int64(n.cfg.MaxClients) {
				msg = "ERR max number of clients per address reached"
				n.stats.RejectedPerIP.Add(1)
			} else {
				n.stats.Rejected.Add(1)
			}
			c.SetWriteDeadline(time.Now().Add(time.Second))
			c.Write(appendErr(nil, msg))
			return
		}
		forked = true
		n.stats.ForkedOverMax.Add(1)
	}
	if !forked {
		defer n.perIP.done(ip)
	}
	// Runs last (after the client count is released and the connection
	// state is dropped): a protocol error over its IP's budget is answered
	// only after the penalty (penalty.go).
	var heldErr []byte
	defer func() {
		if heldErr != nil {
			n.holdBadClient(c, heldErr)
		}
	}()
	defer n.stats.Clients.Add(-1)
	cc := &clientConn{
		n:    n,
		c:    c,
		p:    newRESPParser(max(n.cfg.MaxValue, n.cfg.MaxKey), 2*n.cfg.MaxCmdKeys+2),
		buf:  make([]byte, 16<<10),
		seed: maphash.MakeSeed(),
	}
	defer cc.dl.stop()
	cc.seqAttach()
	defer cc.seqDetach()
	maxBuf := 2*n.cfg.MaxValue + 1<<20
	start, end := 0, 0
	for {
		if start == end {
			start, end = 0, 0
		}
		if end == len(cc.buf) {
			if start > 0 {
				end = copy(cc.buf, cc.buf[start:end])
				start = 0
			} else if len(cc.buf) < maxBuf {
				nb := make([]byte, min(2*len(cc.buf), maxBuf))
				copy(nb, cc.buf[:end])
				cc.buf = nb
			} else {
				n.stats.BadRequests.Add(1)
				msg := appendErr(nil, "ERR Protocol error: request too large")
				if n.penalty.take(c.RemoteAddr(), time.Now()) {
					heldErr = msg
				} else {
					c.SetWriteDeadline(time.Now().Add(time.Second))
					c.Write(msg)
				}
				return
			}
		}
		if n.cfg.IdleTimeout > 0 {
			c.SetReadDeadline(time.Now().Add(n.cfg.IdleTimeout))
		}
		nr, err := c.Read(cc.buf[end:])
		if nr == 0 && err != nil {
			return
		}
		end += nr
		cc.sq.read += uint64(nr)
		proto := false
		for {
			used, res := cc.p.next(cc.buf[start:end])
			start += used
			switch res {
			case resCommand:
				cc.add(cc.p.args)
				cc.seqParsed(end - start)
			case resTooBig:
				n.stats.BadRequests.Add(1)
				cc.cmds = append(cc.cmds, batchCmd{kind: cmdTooBig,
					err: fmt.Sprintf("ERR argument too large (max %d bytes)", cc.p.maxArg)})
			case resProto:
				proto = true
			}
			if res == resNeedMore || res == resProto || len(cc.cmds) >= maxBatch {
				if len(cc.cmds) > 0 {
					cc.run()
					cc.seqConsume()
				}
				if res != resNeedMore && res != resProto {
					continue
				}
				break
			}
		}
		if proto {
			n.stats.BadRequests.Add(1)
			msg := appendErr(nil, "ERR Protocol error: "+cc.p.err)
			if n.penalty.take(c.RemoteAddr(), time.Now()) {
				heldErr = msg
			} else {
				cc.out = append(cc.out, msg...)
			}
		}
		cc.flush()
		if cc.dead && heldErr != nil {
			n.penalty.release() // nobody to answer
			heldErr = nil
		}
		if proto || cc.quit || cc.dead {
			return
		}
		if cap(cc.buf) > 1<<20 && start == end {
			cc.buf = make([]byte, 16<<10)
			start, end = 0, 0
		}
	}
}

func eq(a []byte, s string) bool {
	if len(a) != len(s) {
		return false
	}
	for i := 0; i < len(a); i++ {
		c := a[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// add classifies one command and appends it to the batch.
func (cc *clientConn) add(args [][]byte) {
	bc := batchCmd{argStart: len(cc.argv)}
	cc.argv = append(cc.argv, args...)
	bc.argEnd = len(cc.argv)
	name := args[0]
	nargs := len(args)
	if cc.n.cfg.RequirePass != nil && !cc.authed && !eq(name, "auth") && !eq(name, "hello") && !eq(name, "ping") && !eq(name, "quit") {
		bc.kind, bc.err = cmdImmediate, "NOAUTH Authentication required."
		cc.n.stats.AuthFail.Add(1)
		cc.cmds = append(cc.cmds, bc)
		return
	}
	arity := func(ok bool) bool {
		if !ok {
			bc.kind = cmdImmediate
			bc.err = "ERR wrong number of arguments for '" + strings.ToLower(string(appendSafe(nil, name))) + "' command"
		}
		return ok
	}
	switch {
	case eq(name, "get"):
		if arity(nargs == 2) {
			bc.kind = cmdGet
		}
	case eq(name, "set"):
		if arity(nargs >= 3) {
			bc.kind = cmdSet
			if nargs > 3 {
				bc.kind, bc.err = cmdImmediate, "ERR syntax error (SET options are not supported)"
			}
		}
	case eq(name, "del"), eq(name, "unlink"):
		if arity(nargs >= 2) {
			bc.kind = cmdDel
		}
	case eq(name, "exists"):
		if arity(nargs >= 2) {
			bc.kind = cmdExists
		}
	case eq(name, "mget"):
		if arity(nargs >= 2) {
			bc.kind = cmdMGet
		}
	case eq(name, "mset"):
		if arity(nargs >= 3 && nargs%2 == 1) {
			bc.kind = cmdMSet
		}
	case eq(name, "quit"):
		bc.kind = cmdQuit
	case eq(name, "hello") && cc.n.cfg.RequirePass != nil:
		bc.kind = cmdImmediate
		if nargs >= 5 && eq(args[2], "auth") {
			bc.err = cc.auth(args[3:5])
		} else if !cc.authed {
			bc.err = "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"
		}
	case eq(name, "auth"):
		// Decided now, not when the batch runs, so that commands pipelined
		// behind AUTH see its outcome (as in Redis).
		if arity(nargs == 2 || nargs == 3) {
			bc.kind, bc.err = cmdOK, cc.auth(args[1:])
		}
	default:
		bc.kind = cmdImmediate
	}
	if bc.err == "" && (bc.kind == cmdSet || bc.kind == cmdDel || bc.kind == cmdMSet) && cc.n.store.full.Load() {
		bc.kind, bc.err = cmdImmediate, errMisconf
		cc.n.stats.DiskFull.Add(1)
	}
	if bc.err == "" && bc.kind != cmdImmediate && bc.kind != cmdQuit && bc.kind != cmdOK && len(cc.keys(bc)) > cc.n.cfg.MaxCmdKeys*cc.keyStep(bc) {
		bc.kind = cmdImmediate
		bc.err = fmt.Sprintf("ERR too many keys in one command (max %d)", cc.n.cfg.MaxCmdKeys)
	}
	if bc.err == "" && bc.kind != cmdImmediate && bc.kind != cmdQuit && bc.kind != cmdOK {
		// Keys are held to MaxKey, MSET's values (every other argument)
		// to MaxValue only.
		keys, step := cc.keys(bc), cc.keyStep(bc)
		for i := 0; i < len(keys); i += step {
			if len(keys[i]) > cc.n.cfg.MaxKey {
				bc.kind = cmdImmediate
				bc.err = fmt.Sprintf("ERR key too large (max %d bytes)", cc.n.cfg.MaxKey)
				break
			}
			if step == 2 && len(keys[i+1]) > cc.n.cfg.MaxValue {
				bc.kind = cmdImmediate
				bc.err = fmt.Sprintf("ERR value too large (max %d bytes)", cc.n.cfg.MaxValue)
				break
			}
		}
	}
	if bc.err != "" {
		cc.n.stats.BadRequests.Add(1)
	}
	cc.cmds = append(cc.cmds, bc)
}

func (cc *clientConn) keyStep(bc batchCmd) int {
	if bc.kind == cmdMSet {
		return 2
	}
	return 1
}

// keys returns the arguments after the command name of a data command: its
// keys, or for MSET keys and values alternating (keyStep 2).
func (cc *clientConn) keys(bc batchCmd) [][]byte {
	a := cc.argv[bc.argStart+1 : bc.argEnd]
	if bc.kind == cmdSet {
		return a[:1]
	}
	return a
}

// auth checks AUTH's arguments ([user] password); it returns "" on
// success, else the error reply.
func (cc *clientConn) auth(args [][]byte) string {
	want := cc.n.cfg.RequirePass
	if want == nil {
		return "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"
	}
	user, pass := []byte("default"), args[0]
	if len(args) == 2 {
		user, pass = args[0], args[1]
	}
	if string(user) != "default" || subtle.ConstantTimeCompare(pass, want) != 1 {
		cc.n.stats.AuthFail.Add(1)
		return "WRONGPASS invalid username-password pair or user is disabled."
	}
	cc.authed = true
	return ""
}

// run executes the batch and appends every reply to out.
func (cc *clientConn) run() {
	i := 0
	for i < len(cc.cmds) && !cc.dead { // a closed client's remaining commands are dropped
		// Start a group: commands whose keys are distinct from the group's.
		cc.hashes = cc.hashes[:0]
		cc.ops = cc.ops[:0]
		cc.dl.reset(cc.n.cfg.Timeout)
		j := i
		for ; j < len(cc.cmds); j++ {
			if j > i && len(cc.ops) >= 256 {
				break
			}
			if !cc.startCmd(&cc.cmds[j], j > i) {
				break
			}
		}
		for k := i; k < j; k++ {
			cc.finishCmd(&cc.cmds[k])
			if len(cc.out) >= outFlush {
				cc.flush()
			}
		}
		for _, o := range cc.ops {
			if o != nil {
				cc.n.coord.release(o)
			}
		}
		i = j
	}
	cc.cmds = cc.cmds[:0]
	cc.argv = cc.argv[:0]
	cc.ops = cc.ops[:0]
}

func (cc *clientConn) collides(keys [][]byte, step int) bool {
	for i := 0; i < len(keys); i += step {
		h := maphash.Bytes(cc.seed, keys[i])
		for _, g := range cc.hashes {
			if g == h {
				return true
			}
		}
	}
	return false
}

// startCmd starts bc's quorum ops; it returns false (starting nothing) when
// bc must wait for the current group because it touches one of its keys.
func (cc *clientConn) startCmd(bc *batchCmd, inGroup bool) bool {
	bc.opStart = len(cc.ops)
	bc.opEnd = bc.opStart
	if bc.kind == cmdImmediate || bc.kind == cmdTooBig || bc.kind == cmdQuit || bc.kind == cmdOK {
		return true
	}
	keys := cc.keys(*bc)
	step := 1
	if bc.kind == cmdMSet {
		step = 2
	}
	if inGroup && cc.collides(keys, step) {
		return false
	}
	writes := bc.kind == cmdSet || bc.kind == cmdDel || bc.kind == cmdMSet
	if writes && cc.n.seq != nil && !cc.seqStamp(bc) {
		return true // refused or stamp missing: bc.err says why
	}
	for i := 0; i < len(keys); i += step {
		k := keys[i]
		if writes {
			// Within one command a repeated key is written once: the last
			// occurrence wins (as in Redis).
			dup := false
			for j := i + step; j < len(keys); j += step {
				if bytes.Equal(keys[j], k) {
					dup = true
					break
				}
			}
			if dup {
				cc.ops = append(cc.ops, nil)
				continue
			}
		}
		cc.hashes = append(cc.hashes, maphash.Bytes(cc.seed, k))
		o, err := cc.n.coord.acquireOp(&cc.dl)
		if err != nil {
			cc.ops = append(cc.ops, nil)
			bc.err = "ERR " + err.Error()
			continue
		}
		cc.ops = append(cc.ops, o)
		switch bc.kind {
		case cmdGet, cmdExists, cmdMGet:
			cc.n.coord.start(o, opGet, k, nil)
		case cmdSet:
			cc.startWrite(o, opSet, k, cc.argv[bc.argStart+2], bc)
		case cmdMSet:
			cc.startWrite(o, opSet, k, keys[i+1], bc)
		case cmdDel:
			bc.distinct++
			cc.startWrite(o, opDel, k, nil, bc)
		}
	}
	bc.opEnd = len(cc.ops)
	return true
}

// finishCmd waits for bc's ops and appends its reply.
func (cc *clientConn) finishCmd(bc *batchCmd) {
	n := cc.n
	n.stats.Commands.Add(1)
	var err error
	for _, o := range cc.ops[bc.opStart:bc.opEnd] {
		if o == nil {
			continue
		}
		if e := n.coord.wait(o, &cc.dl); e != nil && err == nil {
			err = e
		}
	}
	if bc.err != "" {
		n.stats.Errors.Add(1)
		cc.out = appendErr(cc.out, bc.err)
		return
	}
	if err != nil {
		n.stats.Errors.Add(1)
		if errors.Is(err, ErrNoQuorum) || errors.Is(err, ErrTimeout) {
			n.stats.QuorumErrors.Add(1)
		}
		cc.out = appendErr(cc.out, "ERR "+err.Error())
		return
	}
	cc.seqDone(bc)
	ops := cc.ops[bc.opStart:bc.opEnd]
	switch bc.kind {
	case cmdImmediate:
		cc.immediate(cc.argv[bc.argStart:bc.argEnd])
	case cmdQuit:
		cc.out = redcon.AppendOK(cc.out)
		cc.quit = true
	case cmdOK:
		cc.out = redcon.AppendOK(cc.out)
	case cmdGet:
		if ops[0].found() {
			cc.out = redcon.AppendBulk(cc.out, ops[0].bestVal)
		} else {
			cc.out = redcon.AppendNull(cc.out)
		}
	case cmdSet, cmdMSet:
		cc.out = redcon.AppendOK(cc.out)
	case cmdDel:
		// DEL answers the number of distinct keys named, whatever they held:
		// the reply must be identical on every node and in every DC (the
		// middlebox compares DCs' replies byte for byte), and after it every
		// one of those keys is absent.
		cc.out = redcon.AppendInt(cc.out, int64(bc.distinct))
	case cmdExists:
		c := 0
		for _, o := range ops {
			if o.found() {
				c++
			}
		}
		cc.out = redcon.AppendInt(cc.out, int64(c))
	case cmdMGet:
		cc.out = redcon.AppendArray(cc.out, len(ops))
		for _, o := range ops {
			if o.found() {
				cc.out = redcon.AppendBulk(cc.out, o.bestVal)
			} else {
				cc.out = redcon.AppendNull(cc.out)
			}
		}
	}
}
