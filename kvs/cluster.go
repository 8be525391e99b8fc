package kvs

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// ClusterConfig describes a whole DC of nodes run in one process: either n
// nodes on one host with consecutive ports (RESP on BasePort+i, peers on
// PeerBasePort+i, readiness on HTTPBasePort+i), or one node per IP in IPs,
// each on the same three ports (Port, PeerPort, HTTPPort).
type ClusterConfig struct {
	Nodes        int      // number of nodes (ignored when IPs is set)
	Quorum       int      // 0: majority
	Host         string   // host for port mode, default 127.0.0.1
	BasePort     int      // port mode: RESP port of node 1
	PeerBasePort int      // port mode: default BasePort+100
	HTTPBasePort int      // port mode: default BasePort+200
	IPs          []string // IP mode: one node per address
	Port         int      // IP mode: RESP port, default 6379
	PeerPort     int      // IP mode: default 7379
	HTTPPort     int      // IP mode: default 8379
	Dir          string   // node i stores in Dir/node<i>
	Sync         bool
	InMemory     bool
	Timeout      time.Duration
	Logger       *slog.Logger
	// Sequenced mode (see Config.OrderListen): order-stream port of every IP
	// (IP mode) or of node 1, consecutive (port mode); 0 = ABD mode.
	OrderPort   int
	OrderSecret []byte

	Cluster       string // cluster id (default "sdnkvs")
	PeerSecret    []byte // nil: a random secret shared by this process's nodes only
	InsecurePeers bool   // no peer authentication at all
	RequirePass   []byte // RESP AUTH password for every node
	DebugListen   string // pprof of node 1 on this loopback address
	Reconfigure   bool   // accept a changed membership (see Config.Reconfigure)
	// Limits: MaxClients, IdleTimeout, WriteTimeout, MaxCmdKeys,
	// MinFreeDisk and the catch-up settings (DCName, Remotes, CatchupRate, CatchupTarget)
	// are copied to every node (zero: the defaults).
	Limits Config
}

// Cluster is a set of nodes run in one process. Safe for concurrent use.
type Cluster struct {
	mu    sync.Mutex
	cfgs  []Config
	nodes []*Node
}

// NodeConfigs expands a ClusterConfig into one Config per node (IDs 1..n).
func (cc ClusterConfig) NodeConfigs() ([]Config, error) {
	host := cc.Host
	if host == "" {
		host = "127.0.0.1"
	}
	var resp, peer, http []string
	if len(cc.IPs) > 0 {
		p, pp, hp := cc.Port, cc.PeerPort, cc.HTTPPort
		if p == 0 {
			p = 6379
		}
		if pp == 0 {
			pp = 7379
		}
		if hp == 0 {
			hp = 8379
		}
		for _, ip := range cc.IPs {
			if net.ParseIP(ip) == nil {
				return nil, fmt.Errorf("kvs: %q is not an IP address", ip)
			}
			resp = append(resp, net.JoinHostPort(ip, strconv.Itoa(p)))
			peer = append(peer, net.JoinHostPort(ip, strconv.Itoa(pp)))
			http = append(http, net.JoinHostPort(ip, strconv.Itoa(hp)))
		}
	} else {
		if cc.Nodes < 1 {
			return nil, errors.New("kvs: a cluster needs at least one node")
		}
		if cc.BasePort <= 0 {
			return nil, errors.New("kvs: a base port is required")
		}
		pb, hb := cc.PeerBasePort, cc.HTTPBasePort
		if pb == 0 {
			pb = cc.BasePort + 100
		}
		if hb == 0 {
			hb = cc.BasePort + 200
		}
		for i := 0; i < cc.Nodes; i++ {
			resp = append(resp, net.JoinHostPort(host, strconv.Itoa(cc.BasePort+i)))
			peer = append(peer, net.JoinHostPort(host, strconv.Itoa(pb+i)))
			http = append(http, net.JoinHostPort(host, strconv.Itoa(hb+i)))
		}
	}
	secret := cc.PeerSecret
	if secret == nil && !cc.InsecurePeers && len(resp) > 1 {
		// All nodes run in this process: a random secret admits exactly
		// them (and no external peer) to their peer ports.
		secret = make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return nil, err
		}
	}
	cfgs := make([]Config, len(resp))
	for i := range resp {
		cfgs[i] = Config{
			ID: i + 1, Listen: resp[i], PeerListen: peer[i], HTTPListen: http[i],
			Peers: peer, Quorum: cc.Quorum, Sync: cc.Sync, InMemory: cc.InMemory,
			Timeout: cc.Timeout, Logger: cc.Logger, OrderSecret: cc.OrderSecret,
			Cluster: cc.Cluster, PeerSecret: secret, InsecurePeers: cc.InsecurePeers, RequirePass: cc.RequirePass,
			Reconfigure: cc.Reconfigure,
			MaxClients:  cc.Limits.MaxClients, MaxClientsPerIP: cc.Limits.MaxClientsPerIP, IdleTimeout: cc.Limits.IdleTimeout, WriteTimeout: cc.Limits.WriteTimeout,
			MaxCmdKeys: cc.Limits.MaxCmdKeys, MinFreeDisk: cc.Limits.MinFreeDisk,
			DCName: cc.Limits.DCName, Remotes: cc.Limits.Remotes, CatchupRate: cc.Limits.CatchupRate,
			CatchupTarget: cc.Limits.CatchupTarget,
		}
		if i == 0 {
			cfgs[i].DebugListen = cc.DebugListen
		}
		if cc.OrderPort != 0 {
			cfgs[i].OrderListen = orderAddr(resp[i], cc.OrderPort, i, len(cc.IPs) > 0)
		}
		if !cc.InMemory {
			cfgs[i].Dir = filepath.Join(cc.Dir, fmt.Sprintf("node%d", i+1))
		}
	}
	return cfgs, nil
}

// StartCluster starts every node of cc.
func StartCluster(cc ClusterConfig) (*Cluster, error) {
	cfgs, err := cc.NodeConfigs()
	if err != nil {
		return nil, err
	}
	return StartNodes(cfgs)
}

// StartNodes starts one node per config.
func StartNodes(cfgs []Config) (*Cluster, error) {
	c := &Cluster{cfgs: cfgs, nodes: make([]*Node, len(cfgs))}
	for i := range cfgs {
		if err := c.Restart(i); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// Len is the number of nodes.
func (c *Cluster) Len() int { return len(c.cfgs) }

// Config returns node i's configuration.
func (c *Cluster) Config(i int) Config { return c.cfgs[i] }

// Node returns node i, or nil while it is stopped.
func (c *Cluster) Node(i int) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i]
}

// Stop stops node i (no-op if stopped).
func (c *Cluster) Stop(i int) error {
	c.mu.Lock()
	n := c.nodes[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	if n == nil {
		return nil
	}
	return n.Close()
}

// Restart starts node i again from its data directory (no-op if running).
func (c *Cluster) Restart(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nodes[i] != nil {
		return nil
	}
	var err error
	// The listen ports were just released by the stopped node; retry for a
	// while in case the kernel is still tearing the old sockets down (a
	// second was too short on a loaded machine under -race).
	for deadline := time.Now().Add(5 * time.Second); ; {
		var n *Node
		if n, err = Start(c.cfgs[i]); err == nil {
			c.nodes[i] = n
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("restart node %d: %w", i+1, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// AllReady reports whether every node runs, votes and reaches all its
// peers.
func (c *Cluster) AllReady() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n == nil || n.reachable() < n.size || !n.voter.Load() {
			return false
		}
	}
	return true
}

// Close stops every node.
func (c *Cluster) Close() error {
	var errs []error
	for i := range c.cfgs {
		errs = append(errs, c.Stop(i))
	}
	return errors.Join(errs...)
}

// orderAddr is node i's order-stream address: the RESP host on port (IP
// mode) or on port+i (port mode).
func orderAddr(resp string, port, i int, ipMode bool) string {
	host, _, _ := net.SplitHostPort(resp)
	if !ipMode {
		port += i
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}
