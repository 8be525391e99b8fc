package kvs

// Commands the RESP front answers without a quorum operation.

import (
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/tidwall/redcon"
)

// immediate answers commands that need no quorum.
func (cc *clientConn) immediate(args [][]byte) {
	n := cc.n
	name := args[0]
	out := cc.out
	switch {
	case eq(name, "ping"):
		switch len(args) {
		case 1:
			out = redcon.AppendString(out, "PONG")
		case 2:
			out = redcon.AppendBulk(out, args[1])
		default:
			out = cc.arityErr(out, name)
		}
	case eq(name, "echo"):
		if len(args) != 2 {
			out = cc.arityErr(out, name)
		} else {
			out = redcon.AppendBulk(out, args[1])
		}
	case eq(name, "info"):
		if cc.forked() {
			out = redcon.AppendBulkString(out, forkedInfo)
		} else {
			out = redcon.AppendBulkString(out, n.info())
		}
	case eq(name, "config"):
		if len(args) >= 3 && eq(args[1], "get") {
			// What redis-benchmark asks for on connect; everything else is
			// an empty answer, as for an unknown parameter.
			var kv []string
			for _, p := range args[2:] {
				switch {
				case eq(p, "save"):
					kv = append(kv, "save", "")
				case eq(p, "appendonly"):
					kv = append(kv, "appendonly", "no")
				}
			}
			out = redcon.AppendArray(out, len(kv))
			for _, s := range kv {
				out = redcon.AppendBulkString(out, s)
			}
		} else if len(args) < 2 {
			out = cc.arityErr(out, name)
		} else {
			out = appendErr(out, "ERR unsupported CONFIG subcommand")
		}
	case eq(name, "hello"):
		if len(args) >= 2 && !eq(args[1], "2") {
			if _, err := strconv.Atoi(string(args[1])); err != nil {
				out = appendErr(out, "ERR Protocol version is not an integer or out of range")
			} else {
				out = appendErr(out, "NOPROTO sorry, this protocol version is not supported")
			}
			break
		}
		out = redcon.AppendArray(out, 14)
		for _, s := range []string{"server", "redis", "version", "7.0.0"} {
			out = redcon.AppendBulkString(out, s)
		}
		out = redcon.AppendBulkString(out, "proto")
		out = redcon.AppendInt(out, 2)
		out = redcon.AppendBulkString(out, "id")
		out = redcon.AppendInt(out, cc.clientID())
		for _, s := range []string{"mode", "standalone", "role", "master"} {
			out = redcon.AppendBulkString(out, s)
		}
		out = redcon.AppendBulkString(out, "modules")
		out = redcon.AppendArray(out, 0)
	case eq(name, "client"):
		switch {
		case len(args) < 2:
			out = cc.arityErr(out, name)
		case eq(args[1], "setinfo"), eq(args[1], "setname"):
			out = redcon.AppendOK(out)
		case eq(args[1], "getname"):
			out = redcon.AppendNull(out)
		case eq(args[1], "id"):
			out = redcon.AppendInt(out, cc.clientID())
		default:
			out = appendErr(out, "ERR unsupported CLIENT subcommand")
		}
	case eq(name, "select"):
		if len(args) != 2 {
			out = cc.arityErr(out, name)
		} else if string(args[1]) == "0" {
			out = redcon.AppendOK(out)
		} else {
			out = appendErr(out, "ERR DB index is out of range")
		}
	case eq(name, "sdnkvs.digest"), eq(name, "sdnkvs.scan"):
		if cc.forked() {
			// One node's store, never the same bytes in every DC (a node
			// may lack a record its DC holds on a quorum): on a forked
			// connection it would only get a DC dropped.
			n.stats.BadRequests.Add(1)
			out = appendErr(out, "ERR "+strings.ToUpper(string(appendSafe(nil, name)))+" reads one node's store: send it to a node or on the anycast port, not on a forked port")
			break
		}
		out = cc.adminCmd(out, args) // divergence scan (kvs/seq_diff.go)
	case eq(name, "command"):
		out = redcon.AppendArray(out, 0)
	default:
		n.stats.BadRequests.Add(1)
		n.stats.Errors.Add(1)
		b := append([]byte("ERR unknown command '"), appendSafe(nil, name)...)
		b = append(b, "', with args beginning with: "...)
		for _, a := range args[1:min(len(args), 4)] {
			b = append(b, '\'')
			b = appendSafe(b, a)
			b = append(b, "' "...)
		}
		out = appendErr(out, string(b))
	}
	cc.out = out
}

// forkedInfo is INFO's reply on a forked connection: every DC must send
// the same bytes there (the middlebox compares them, docs/design.md
// section 4), so it names no node and holds no counter.
const forkedInfo = "# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\nsdnkvs_forked:1\r\n" +
	"sdnkvs_note:this connection is forked to every DC and their replies must be equal; send INFO on the anycast port or to a node for its figures\r\n"

// forked reports whether the connection is a forked flow of the
// middlebox's sequenced port: the order stream announced it (OPEN, or a
// STAMP, both sent before the flow's first segment). Its replies must not
// depend on the node.
func (cc *clientConn) forked() bool {
	if cc.n.seq == nil || !cc.sq.hasFlow {
		return false
	}
	_, res := cc.n.seq.table.lookup(cc.sq.flow, 0)
	return res != flowUnknown
}

// clientID is CLIENT ID's and HELLO's id: the node's id on a direct or
// anycast connection (as before), and on a forked one a number every DC
// derives alike from the client's address and port (unique among the
// client connections of one service port).
func (cc *clientConn) clientID() int64 {
	if cc.forked() {
		f := cc.sq.flow
		return int64(binary.BigEndian.Uint32(f.ClientIP[:]))<<16 | int64(f.ClientPort)
	}
	return int64(cc.n.cfg.ID)
}

func (cc *clientConn) arityErr(out, name []byte) []byte {
	cc.n.stats.BadRequests.Add(1)
	return appendErr(out, "ERR wrong number of arguments for '"+strings.ToLower(string(appendSafe(nil, name)))+"' command")
}

// info renders the INFO reply.
func (n *Node) info() string {
	s := &n.stats
	var b strings.Builder
	fmt.Fprintf(&b, "# Server\r\nredis_version:7.0.0\r\nsdnkvs_node_id:%d\r\nredis_mode:standalone\r\ntcp_port:%s\r\n", n.cfg.ID, portOf(n.Addr()))
	fmt.Fprintf(&b, "\r\n# Clients\r\nconnected_clients:%d\r\n", s.Clients.Load())
	fmt.Fprintf(&b, "\r\n# Persistence\r\nsdnkvs_sync_writes:%t\r\nsdnkvs_badger_commits:%d\r\nsdnkvs_replica_writes:%d\r\n",
		n.cfg.Sync, n.store.Commits.Load(), n.store.Writes.Load())
	fmt.Fprintf(&b, "\r\n# Stats\r\ntotal_commands_processed:%d\r\nsdnkvs_errors:%d\r\nsdnkvs_bad_requests:%d\r\nsdnkvs_quorum_errors:%d\r\nsdnkvs_peer_bad_frames:%d\r\n",
		s.Commands.Load(), s.Errors.Load(), s.BadRequests.Load(), s.QuorumErrors.Load(), s.PeerBad.Load())
	fmt.Fprintf(&b, "\r\n# Replication\r\nrole:master\r\nsdnkvs_cluster_size:%d\r\nsdnkvs_quorum:%d\r\nsdnkvs_reachable:%d\r\nsdnkvs_state:%s\r\n",
		n.size, n.quorum, n.reachable(), n.state())
	fmt.Fprintf(&b, "\r\n# Safety\r\nsdnkvs_peer_auth_failures:%d\r\nsdnkvs_bad_tags:%d\r\nsdnkvs_id_collisions:%d\r\nsdnkvs_auth_failures:%d\r\nsdnkvs_promotions:%d\r\nsdnkvs_damaged_reads:%d\r\nsdnkvs_damaged_at_open:%d\r\n",
		s.PeerAuthFail.Load(), s.BadTags.Load(), s.IDCollisions.Load(), s.AuthFail.Load(), s.Promotions.Load(), n.store.Damaged.Load(), s.DamageOpen.Load())
	if n.seq != nil {
		flows, ranges := n.seq.table.size()
		n.seq.stats.appendInfo(&b, flows, ranges)
	}
	n.catchStats.appendInfo(&b)
	return b.String()
}

func portOf(addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return p
}
