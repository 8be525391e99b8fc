package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sdnkvs/sdnkvs/internal/peerauth"
	"github.com/sdnkvs/sdnkvs/kvs"
)

// KvsCmd runs one store node, or (with the cluster subcommand) a whole local
// DC of nodes in this process.
type KvsCmd struct {
	Node    KvsNodeCmd    `cmd:"" default:"withargs" help:"Run one node (the default)."`
	Cluster KvsClusterCmd `cmd:"" help:"Run a whole DC of nodes in this process (development, benchmarks, testbed)."`
	Diff    KvsDiffCmd    `cmd:"" help:"Divergence scan: list every key whose records differ between two DCs (exit status 1 if any)."`
}

// KvsNodeCmd runs one node.
type KvsNodeCmd struct {
	ID          int           `name:"id" required:"" help:"Node id, unique in the cluster (1..32767)."`
	Listen      string        `name:"listen" default:"127.0.0.1:6379" help:"RESP (Redis protocol) listen address."`
	PeerListen  string        `name:"peer-listen" default:"127.0.0.1:7379" help:"Peer protocol listen address."`
	HTTP        string        `name:"http" default:"" help:"Readiness HTTP address (/ready, /healthz); default: the --listen IP on port 8379."`
	Peers       []string      `name:"peers" sep:"," required:"" help:"Peer addresses of every node of the cluster, this one included: the i-th address is node i, or write ID=ADDR. Only these nodes may connect to the peer port."`
	Data        string        `name:"data" required:"" type:"path" help:"Badger data directory."`
	Quorum      int           `name:"quorum" default:"0" help:"Quorum size; 0 = majority of the cluster (9 nodes: 5)."`
	Sync        bool          `name:"sync" help:"fsync every commit before acknowledging (survives power loss; much slower). Without it an acknowledged write survives a crash of the process but not of the machine."`
	Timeout     time.Duration `name:"timeout" default:"2s" help:"Deadline of one client command; a missed deadline is an error reply, never a wrong answer."`
	OrderListen string        `name:"order-listen" placeholder:"IP:PORT" help:"Sequenced mode: listen for the middlebox's order stream here (port 7380 by convention). Writes then take the middlebox's stamps as tags (one round); writes not coming through the middlebox's sequenced port are refused, reads are served on any connection."`
	OrderSecret
	KvsSecurityFlags
	KvsLimitFlags
	KvsCatchupFlags
}

// KvsLimitFlags bound what one client can make a node hold.
type KvsLimitFlags struct {
	MaxClients      int           `name:"maxclients" default:"10000" help:"Open client connections per node; more are answered -ERR max number of clients reached and closed."`
	MaxClientsPerIP int           `name:"maxclients-per-ip" default:"2500" help:"Open client connections per node from one source address; more are answered -ERR max number of clients per address reached and closed (forked connections of the middlebox's sequenced port are spared: it bounds them per source); 0 = no bound."`
	IdleTimeout     time.Duration `name:"idle-timeout" default:"0s" help:"Close a client connection idle this long (0: never, as Redis's timeout 0)."`
	WriteTimeout    time.Duration `name:"client-write-timeout" default:"10s" help:"Close a client that does not read its replies within this (bounds the output buffer, like Redis's client-output-buffer-limit)."`
	MaxCmdKeys      int           `name:"max-command-keys" default:"1024" help:"Keys in one MGET, MSET, DEL or EXISTS; a larger command fails at once instead of holding the node's operation pool."`
	ProtoErrRate    float64       `name:"protocol-error-rate" default:"1" help:"Protocol errors per second (burst 10) a source IP may make before each further one holds its connection, unread and unanswered, for --protocol-error-hold before its -ERR reply and close (slows a client that reconnects and resends a bad command in a loop; other clients, even from the same IP, are served normally)."`
	ProtoErrHold    time.Duration `name:"protocol-error-hold" default:"1s" help:"How long a connection over its IP's --protocol-error-rate is held before its -ERR reply and close; 0 answers and closes at once (no penalty)."`
	MinFreeDisk     string        `name:"min-free-disk" default:"256MiB" help:"Refuse writes (-MISCONF) while the data directory's file system has less free space than this; reads keep working. 0 disables the check."`
}

func (f KvsLimitFlags) apply(c *kvs.Config) error {
	c.MaxClients, c.IdleTimeout, c.WriteTimeout, c.MaxCmdKeys = f.MaxClients, f.IdleTimeout, f.WriteTimeout, f.MaxCmdKeys
	if f.MaxClientsPerIP < 0 {
		return fmt.Errorf("--maxclients-per-ip: must be >= 0, got %d", f.MaxClientsPerIP)
	}
	c.MaxClientsPerIP = f.MaxClientsPerIP
	if f.ProtoErrRate <= 0 {
		return fmt.Errorf("--protocol-error-rate: must be > 0, got %v", f.ProtoErrRate)
	}
	if f.ProtoErrHold < 0 {
		return fmt.Errorf("--protocol-error-hold: must be >= 0, got %v", f.ProtoErrHold)
	}
	c.ProtoErrRate, c.ProtoErrHold = f.ProtoErrRate, f.ProtoErrHold
	if f.ProtoErrHold == 0 {
		c.ProtoErrHold = -1 // kvs.Config: negative disables, 0 is the default
	}
	v, err := parseBytes(f.MinFreeDisk)
	if err != nil {
		return fmt.Errorf("--min-free-disk: %w", err)
	}
	c.MinFreeDisk = v
	return nil
}

// parseBytes parses "512MiB", "1GiB", "64KiB" or a plain byte count.
func parseBytes(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.m
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size like 512MiB", s)
	}
	return n * mult, nil
}

// KvsSecurityFlags are the authentication flags of nodes.
type KvsSecurityFlags struct {
	ClusterID       string `name:"cluster-id" default:"sdnkvs" help:"Cluster id; peers with another id are refused."`
	PeerSecretFile  string `name:"peer-secret-file" type:"path" help:"File holding the cluster secret (at least 16 bytes) that authenticates peers. Required for a cluster of several nodes unless --insecure-peers. 'kvs cluster' without it uses a random secret known only to its own nodes."`
	InsecurePeers   bool   `name:"insecure-peers" help:"Run a multi-node cluster without peer authentication: anyone reaching the peer port can read and overwrite every key. For isolated test networks only."`
	RequirepassFile string `name:"requirepass-file" type:"path" help:"File holding the password clients must give with AUTH (like Redis requirepass); before AUTH every command but AUTH, HELLO and PING answers -NOAUTH."`
	DebugListen     string `name:"debug-listen" help:"Serve pprof on this loopback address (e.g. 127.0.0.1:6060); off by default."`
	Reconfigure     bool   `name:"reconfigure" help:"Accept a --peers list that differs from the membership stored in the data directory, and store it. Without it a node refuses to start on a changed list (a node restarted with only itself would otherwise serve a quorum of one)."`
}

// load reads the secret files.
func (f KvsSecurityFlags) loadSecrets() (secret, pass []byte, err error) {
	if f.PeerSecretFile != "" {
		if f.InsecurePeers {
			return nil, nil, fmt.Errorf("--peer-secret-file and --insecure-peers exclude each other")
		}
		if secret, err = peerauth.LoadSecret(f.PeerSecretFile); err != nil {
			return nil, nil, fmt.Errorf("--peer-secret-file: %w", err)
		}
	}
	if f.RequirepassFile != "" {
		b, err := os.ReadFile(f.RequirepassFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--requirepass-file: %w", err)
		}
		if pass = []byte(strings.TrimRight(string(b), "\r\n")); len(pass) == 0 {
			return nil, nil, fmt.Errorf("--requirepass-file: %s is empty", f.RequirepassFile)
		}
	}
	return secret, pass, nil
}

// Run starts the node and serves until SIGINT/SIGTERM.
func (c *KvsNodeCmd) Run(g *Globals) error {
	secret, pass, err := c.loadSecrets()
	if err != nil {
		return err
	}
	httpAddr := c.HTTP
	if httpAddr == "" {
		host := c.Listen[:max(0, strings.LastIndex(c.Listen, ":"))]
		httpAddr = host + ":8379"
	}
	cfg := kvs.Config{
		ID: c.ID, Listen: c.Listen, PeerListen: c.PeerListen, HTTPListen: httpAddr,
		Peers: c.Peers, Quorum: c.Quorum, Dir: c.Data, Sync: c.Sync, Timeout: c.Timeout,
		Logger: slog.Default(), OrderListen: c.OrderListen, OrderSecret: c.Secret,
		Cluster: c.ClusterID, PeerSecret: secret, InsecurePeers: c.InsecurePeers,
		RequirePass: pass, DebugListen: c.DebugListen, Reconfigure: c.Reconfigure,
	}
	if err := c.KvsLimitFlags.apply(&cfg); err != nil {
		return err
	}
	if err := c.KvsCatchupFlags.apply(&cfg); err != nil {
		return err
	}
	n, err := kvs.Start(cfg)
	if err != nil {
		return err
	}
	fmt.Printf("node %d: resp %s peer %s http %s\n", c.ID, n.Addr(), n.PeerAddr(), n.HTTPAddr())
	waitSignal()
	return n.Close()
}

// KvsClusterCmd runs a DC of nodes in one process.
type KvsClusterCmd struct {
	Nodes        int           `name:"nodes" default:"9" help:"Number of nodes (port mode)."`
	BasePort     int           `name:"base-port" default:"16379" help:"Port mode: RESP port of node 1 (nodes on 127.0.0.1, consecutive ports)."`
	PeerBasePort int           `name:"peer-base-port" default:"0" help:"Port mode: peer port of node 1 (default base-port+100)."`
	HTTPBasePort int           `name:"http-base-port" default:"0" help:"Port mode: readiness port of node 1 (default base-port+200)."`
	IPs          []string      `name:"ips" sep:"," help:"IP mode: one node per address (overrides --nodes and the base ports)."`
	Port         int           `name:"port" default:"6379" help:"IP mode: RESP port on every IP."`
	PeerPort     int           `name:"peer-port" default:"7379" help:"IP mode: peer port on every IP."`
	HTTPPort     int           `name:"http-port" default:"8379" help:"IP mode: readiness port on every IP."`
	Data         string        `name:"data" required:"" type:"path" help:"Data directory; node i uses DIR/node<i>."`
	Quorum       int           `name:"quorum" default:"0" help:"Quorum size; 0 = majority."`
	Sync         bool          `name:"sync" help:"fsync every commit before acknowledging (see 'kvs node --help')."`
	Timeout      time.Duration `name:"timeout" default:"2s" help:"Deadline of one client command."`
	OrderPort    int           `name:"order-port" default:"0" help:"Sequenced mode: order-stream port on every IP (IP mode) or of node 1, consecutive (port mode); 0 = ABD mode. See 'kvs node --help' (--order-listen)."`
	OrderSecret
	KvsSecurityFlags
	KvsLimitFlags
	KvsCatchupFlags
}

// Config converts the flags.
func (c *KvsClusterCmd) Config() (kvs.ClusterConfig, error) {
	secret, pass, err := c.loadSecrets()
	if err != nil {
		return kvs.ClusterConfig{}, err
	}
	var lim kvs.Config
	if err := c.KvsLimitFlags.apply(&lim); err != nil {
		return kvs.ClusterConfig{}, err
	}
	if err := c.KvsCatchupFlags.apply(&lim); err != nil {
		return kvs.ClusterConfig{}, err
	}
	return kvs.ClusterConfig{
		Limits:  lim,
		Cluster: c.ClusterID, PeerSecret: secret, InsecurePeers: c.InsecurePeers, RequirePass: pass,
		DebugListen: c.DebugListen, Reconfigure: c.Reconfigure,
		Nodes: c.Nodes, Quorum: c.Quorum, BasePort: c.BasePort, PeerBasePort: c.PeerBasePort,
		HTTPBasePort: c.HTTPBasePort, IPs: c.IPs, Port: c.Port, PeerPort: c.PeerPort,
		HTTPPort: c.HTTPPort, Dir: c.Data, Sync: c.Sync, Timeout: c.Timeout, Logger: slog.Default(),
		OrderPort: c.OrderPort, OrderSecret: c.Secret,
	}, nil
}

// Run starts the cluster, prints one line per node and "cluster ready" once
// every node reaches all its peers, and serves until SIGINT/SIGTERM.
func (c *KvsClusterCmd) Run(g *Globals) error {
	cfg, err := c.Config()
	if err != nil {
		return err
	}
	cl, err := kvs.StartCluster(cfg)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for !cl.AllReady() {
		if time.Now().After(deadline) {
			cl.Close()
			return fmt.Errorf("cluster not connected after 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := 0; i < cl.Len(); i++ {
		n := cl.Node(i)
		fmt.Printf("node %d ready: resp %s peer %s http %s\n", i+1, n.Addr(), n.PeerAddr(), n.HTTPAddr())
	}
	fmt.Printf("cluster ready: %d nodes\n", cl.Len())
	waitSignal()
	fmt.Println("stopping")
	return cl.Close()
}

func waitSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	<-ch
	signal.Stop(ch)
}
