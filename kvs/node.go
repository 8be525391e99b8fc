package kvs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/peerauth"
)

// Config configures one store node.
type Config struct {
	ID          int      // unique in the cluster, 1..MaxNodeID
	Listen      string   // RESP address, e.g. 10.210.1.13:6379
	PeerListen  string   // peer protocol address, e.g. 10.210.1.13:7379
	HTTPListen  string   // readiness/health HTTP address; "" disables it
	DebugListen string   // pprof HTTP address, loopback only; "" disables it
	Peers       []string // every node of the cluster, this one included ("addr" = node i+1, or "id=addr")

	Cluster       string // cluster id, checked in the peer handshake; default "sdnkvs"
	PeerSecret    []byte // cluster secret for the peer handshake (>= 16 bytes)
	InsecurePeers bool   // allow a multi-node cluster without PeerSecret (no peer authentication)
	RequirePass   []byte // RESP AUTH password; nil: no AUTH required
	Reconfigure   bool   // accept a peer list that differs from the stored membership (and store it)
	Quorum        int    // 0: majority of the cluster
	Dir           string // Badger directory
	Sync          bool   // fsync every commit before acknowledging
	InMemory      bool   // tests: no files

	Timeout  time.Duration // per client command; default 2s
	MaxKey   int           // default 4 KiB
	MaxValue int           // default 1 MiB

	MaxClients int // open client connections; default 10000
	// MaxClientsPerIP bounds one source address's open client
	// connections (clients_ip.go); 0: no bound.
	MaxClientsPerIP int
	IdleTimeout     time.Duration // close a client idle this long; 0: never
	WriteTimeout    time.Duration // close a client that does not take its replies within this; default 10s
	MaxCmdKeys      int           // keys in one MGET/MSET/DEL/EXISTS; default 1024
	ProtoErrRate    float64       // protocol errors per second per source IP before their connections are held (penalty.go); default 1
	ProtoErrHold    time.Duration // how long such a connection is held before its -ERR and close; default 1s, negative: never held
	StoreQueue      int           // bytes of writes queued for the committer before writers wait; default 64 MiB
	MinFreeDisk     int64         // refuse writes while the data directory has less free space; 0: no check
	Logger          *slog.Logger

	// Sequenced mode (docs/design-sequencer.md): OrderListen is the address
	// the middlebox's order stream dials; writes then take stamped tags in
	// one round, and writes not coming through the middlebox are refused.
	OrderListen      string
	OrderSecret      []byte        // shared with the middlebox (>= 16 bytes)
	UnsequencedGrace time.Duration // wait for an unknown flow's OPEN; default (and at most) Timeout

	// DC catch-up (docs/design-lifecycle.md): this DC's name, the peer
	// addresses of other DCs' nodes by DC name (the sources a CATCHUP frame
	// names), and the pull rate in bytes/s (0: unlimited).
	DCName      string
	Remotes     map[string][]string
	CatchupRate int64
	// CatchupTarget is the delay a catch-up job's local writes may add to
	// live writes in this DC (catchup_window.go); 0: a fixed window.
	CatchupTarget time.Duration
	// CatchupPageBytes and CatchupPageRecords bound one pulled page
	// (0: CatchupPageBytes, CatchupPageRecords).
	CatchupPageBytes   int
	CatchupPageRecords int
}

// Node is one replica and coordinator: it stores key -> (tag, value), serves
// its peers' quorum requests and coordinates client commands received over
// RESP. Node is safe for concurrent use.
type Node struct {
	cfg    Config
	size   int // replicas including this one
	quorum int
	log    *slog.Logger

	store   *Store
	coord   *coordinator
	peers   []*peerClient
	members []member // the whole cluster, this node included, by id
	seq     *seqNode // nil unless sequenced

	respLn, peerLn net.Listener
	httpSrv        *http.Server
	debugSrv       *http.Server
	debugLn        net.Listener
	httpLn         net.Listener

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	closing chan struct{}
	wg      sync.WaitGroup
	closed  bool

	stats      Stats
	perIP      ipCounts // open client connections per source address (clients_ip.go)
	catchStats CatchupStats
	catchup    catchupDriver // the running catch-up job (catchup_driver.go)
	catchConns catchupConns  // a catch-up stream kept between passes (catchup_conn.go)
	catchCover catchupCover  // the tag range this node's passes copied (catchup_stub.go)
	penalty    *penaltyBox   // nil: protocol errors are never held
	collision  atomic.Bool   // another process claimed this node's id

	ident      *identityStore
	voter      atomic.Bool  // counts toward quorums (see learner.go)
	repairing  atomic.Bool  // pulling records from a quorum of voters
	mustRepair atomic.Bool  // was a voter and lost data: only the repair path leads back
	learnRep   learnRepairs // repairs applied while not a voter (learner_repairs.go)
}

// Stats are a node's counters, safe for concurrent use.
type Stats struct {
	Commands     atomic.Uint64 // RESP commands executed
	Errors       atomic.Uint64 // commands answered with an error
	BadRequests  atomic.Uint64 // unknown commands, wrong arity, oversized, protocol errors
	QuorumErrors atomic.Uint64 // no quorum or timeout
	PeerBad      atomic.Uint64 // malformed peer frames (connection dropped)
	PeerAuthFail atomic.Uint64 // peer handshakes that failed (either direction)
	BadTags      atomic.Uint64 // peer writes or answers with a non-member writer or an out-of-range counter
	IDCollisions atomic.Uint64 // handshakes where a peer claimed an id it does not own
	AuthFail     atomic.Uint64 // client commands refused with NOAUTH or WRONGPASS
	Promotions   atomic.Uint64 // learner -> voter
	Rejected     atomic.Uint64 // connections refused over MaxClients
	// RejectedPerIP counts connections refused over MaxClientsPerIP.
	RejectedPerIP atomic.Uint64
	// ForkedOverMax counts forked connections accepted over MaxClients
	// (front.go: refusing them in one DC only is a reply mismatch).
	ForkedOverMax atomic.Uint64
	SlowClients   atomic.Uint64 // clients closed for not reading their replies
	ProtoHeld     atomic.Uint64 // connections held before their close for a source IP's repeated protocol errors
	DiskFull      atomic.Uint64 // writes refused for lack of disk space
	DamageOpen    atomic.Uint64 // stores found damaged at open (moved aside, rebuilt)
	Clients       atomic.Int64  // open client connections
}

// Start opens storage, listens on the configured addresses and starts
// serving. Peers are connected in the background (with retries).
func Start(cfg Config) (*Node, error) {
	if cfg.ID < 1 || cfg.ID > MaxNodeID {
		return nil, fmt.Errorf("kvs: node id %d out of range 1..%d", cfg.ID, MaxNodeID)
	}
	if cfg.Cluster == "" {
		cfg.Cluster = "sdnkvs"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.MaxKey <= 0 {
		cfg.MaxKey = 4 << 10
	}
	if cfg.MaxKey > 60000 {
		return nil, errors.New("kvs: max key size above 60000 bytes")
	}
	if cfg.MaxValue <= 0 {
		cfg.MaxValue = 1 << 20
	}
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = 10000
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.MaxCmdKeys <= 0 {
		cfg.MaxCmdKeys = 1024
	}
	if cfg.ProtoErrRate <= 0 {
		cfg.ProtoErrRate = 1
	}
	if cfg.ProtoErrHold == 0 {
		cfg.ProtoErrHold = time.Second
	}
	if cfg.StoreQueue <= 0 {
		cfg.StoreQueue = 64 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	members, err := parseMembers(cfg.Peers)
	if err != nil {
		return nil, err
	}
	if len(members) == 0 {
		members = []member{{id: uint64(cfg.ID), addr: cfg.PeerListen}}
	}
	var others []member
	self := false
	for _, m := range members {
		if m.id == uint64(cfg.ID) {
			self = true
			if err := sameListen(m.addr, cfg.PeerListen); err != nil {
				return nil, fmt.Errorf("kvs: node %d: %w (wrong --id, or a peer list that differs from the other nodes')", cfg.ID, err)
			}
		} else {
			others = append(others, m)
		}
	}
	if !self {
		return nil, fmt.Errorf("kvs: node id %d is not in the peer list (entry %d, or \"%d=addr\")", cfg.ID, cfg.ID, cfg.ID)
	}
	if len(others) > 0 && cfg.PeerSecret == nil && !cfg.InsecurePeers {
		return nil, errors.New("kvs: a cluster of several nodes needs a peer secret (--peer-secret-file), or --insecure-peers to run without peer authentication")
	}
	if cfg.PeerSecret != nil && len(cfg.PeerSecret) < peerauth.MinSecret {
		return nil, fmt.Errorf("kvs: peer secret shorter than %d bytes", peerauth.MinSecret)
	}
	n := &Node{cfg: cfg, size: len(others) + 1, members: members, log: cfg.Logger.With("node", cfg.ID),
		conns: map[net.Conn]struct{}{}, closing: make(chan struct{})}
	if cfg.ProtoErrHold > 0 {
		n.penalty = newPenaltyBox(cfg.ProtoErrRate, cfg.ProtoErrHold)
	}
	n.quorum = cfg.Quorum
	if n.quorum == 0 {
		n.quorum = n.size/2 + 1
	}
	if 2*n.quorum <= n.size || n.quorum > n.size {
		return nil, fmt.Errorf("kvs: quorum %d invalid for %d nodes: need %d/2 < quorum <= %d", n.quorum, n.size, n.size, n.size)
	}
	if !cfg.InMemory && cfg.Dir == "" {
		return nil, errors.New("kvs: a data directory is required")
	}
	if err := n.openStorage(); err != nil {
		return nil, err
	}
	n.coord = newCoordinator(n)
	fail := func(err error) (*Node, error) {
		n.Close()
		return nil, err
	}
	if n.peerLn, err = net.Listen("tcp", cfg.PeerListen); err != nil {
		return fail(fmt.Errorf("kvs: peer listen: %w", err))
	}
	if n.respLn, err = net.Listen("tcp", cfg.Listen); err != nil {
		return fail(fmt.Errorf("kvs: listen: %w", err))
	}
	if cfg.OrderListen != "" {
		if err := n.startSequenced(); err != nil {
			return fail(err)
		}
	}
	if cfg.HTTPListen != "" {
		if n.httpLn, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
			return fail(fmt.Errorf("kvs: http listen: %w", err))
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, "ok")
		})
		mux.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) {
			up, q := n.reachable(), n.quorum
			if n.collision.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintf(w, "not ready: node id %d collision (another process claims it)\n", n.cfg.ID)
				return
			}
			if !n.voter.Load() {
				up-- // this node's own answers do not count
			}
			state := n.state()
			if d := n.store.Damaged.Load(); d > 0 {
				state += fmt.Sprintf(", %d damaged reads", d)
			}
			if up < q || !n.voter.Load() {
				// A learner is not ready: until it votes, its readiness
				// cannot vouch for a quorum of current replicas.
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintf(w, "not ready: %d of %d replicas reachable, quorum %d; %s\n", up, n.size, q, state)
				return
			}
			fmt.Fprintf(w, "ready: %d of %d replicas reachable, quorum %d; %s\n", up, n.size, q, state)
		})
		mux.Handle("/metrics", n.metricsHandler())
		n.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go n.httpSrv.Serve(n.httpLn)
	}
	if cfg.DebugListen != "" {
		if err := n.startDebug(cfg.DebugListen); err != nil {
			return fail(err)
		}
	}
	for i, m := range others {
		p := &peerClient{n: n, idx: i, id: m.id, addr: m.addr}
		n.peers = append(n.peers, p)
	}
	for _, p := range n.peers {
		n.wg.Add(1)
		go p.run()
	}
	if cfg.MinFreeDisk > 0 && !cfg.InMemory {
		n.wg.Add(1)
		go n.watchDisk()
	}
	if !n.voter.Load() {
		if len(n.peers) == 0 {
			if err := n.becomeVoter(); err != nil {
				return fail(err)
			}
		} else {
			n.wg.Add(1)
			go n.learnerLoop()
		}
	}
	n.wg.Add(2)
	go n.acceptLoop(n.peerLn, n.servePeer)
	go n.acceptLoop(n.respLn, n.serveClient)
	return n, nil
}

// Addr is the RESP listen address.
func (n *Node) Addr() string { return n.respLn.Addr().String() }

// PeerAddr is the peer listen address.
func (n *Node) PeerAddr() string { return n.peerLn.Addr().String() }

// HTTPAddr is the readiness listen address ("" if disabled).
func (n *Node) HTTPAddr() string {
	if n.httpLn == nil {
		return ""
	}
	return n.httpLn.Addr().String()
}

// Stats returns the node's counters.
func (n *Node) Stats() *Stats { return &n.stats }

// reachable counts replicas this node can send to, itself included.
func (n *Node) reachable() int {
	up := 1
	for _, p := range n.peers {
		if p.w.Load() != nil {
			up++
		}
	}
	return up
}

// Ready reports whether the node can currently reach a quorum (itself
// included), i.e. whether it can serve reads and writes.
func (n *Node) Ready() bool { return !n.collision.Load() && n.reachable() >= n.quorum }

// LocalGet returns this replica's own record for key (no quorum): for tests
// and diagnostics.
func (n *Node) LocalGet(key []byte) (t Tag, deleted bool, val []byte, err error) {
	t, f, v, err := n.store.Get(key, true, nil)
	return t, f&flagTombstone != 0, v, err
}

func (n *Node) track(c net.Conn, add bool) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if add {
		if n.closed {
			return false
		}
		n.conns[c] = struct{}{}
	} else {
		delete(n.conns, c)
	}
	return true
}

func (n *Node) acceptLoop(ln net.Listener, serve func(net.Conn)) {
	defer n.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			select {
			case <-n.closing:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			n.log.Warn("accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if !n.track(c, true) {
			c.Close()
			return
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			defer n.track(c, false)
			defer c.Close()
			serve(c)
		}()
	}
}

// Close stops the node abruptly (like a crash of the process, except that
// storage is closed cleanly): listeners and all connections are closed at
// once, in-flight client commands fail, then Badger is closed.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	close(n.closing)
	for c := range n.conns {
		c.Close()
	}
	n.mu.Unlock()
	if n.respLn != nil {
		n.respLn.Close()
	}
	if n.peerLn != nil {
		n.peerLn.Close()
	}
	if n.seq != nil {
		n.seq.ln.Close()
	}
	for _, srv := range []*http.Server{n.httpSrv, n.debugSrv} {
		if srv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			srv.Shutdown(ctx)
			cancel()
		}
	}
	for _, p := range n.peers {
		p.stop()
	}
	n.wg.Wait()
	var err error
	if n.store != nil {
		err = n.store.Close()
	}
	return err
}
