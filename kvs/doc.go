// Package kvs is the SDN-KVS datacentre store: a node that keeps
// key -> (tag, value) in Badger and makes every key a linearizable
// multi-writer register with the ABD quorum algorithm, serving clients over
// the Redis protocol (RESP).
//
//	client --RESP--> node (coordinator) --peer frames, batched--> every node (replicas, itself included)
//	                  |  SET/DEL: query tags from a quorum, store (max+1, writer) on a quorum
//	                  |  GET:     query a quorum; write the newest back unless a quorum holds it
//	                  v
//	               Badger (group commit by one committer goroutine per node)
//	               + a record cache (tag, flags, small value) of recent keys
//
// # Tags
//
// A tag is (counter, writer), compared lexicographically. The paper's writer
// is a node id; here writer = node id << 48 | a per-node sequence that is
// reserved on disk in blocks before use, so every write operation in the
// cluster has its own tag, even two concurrent writes coordinated by the same
// node or a write before and after a restart. A replica stores a write only
// if its tag is higher than the one it holds: it never goes back.
//
// # Quorums and failures
//
// Every request is sent to every node; an operation proceeds on the first
// quorum of answers (default: majority, 5 of 9; any quorum q with
// n/2 < q <= n is accepted). A node that is not connected counts as failed at
// once, so with fewer than q nodes reachable a command fails fast with
// "ERR no quorum"; otherwise a command that misses its deadline fails with
// "ERR quorum timeout". A failed write may or may not have taken effect (as
// with any timed-out write); a reply is never a wrong value.
//
// # Durability (--sync)
//
// A replica acknowledges a write after the Badger transaction holding it has
// committed. With Sync, the commit fsyncs, so an acknowledged write survives
// power loss (group commit keeps the fsync count per write low). Without it
// (the default) the write has been handed to the kernel when acknowledged: it
// survives a crash or kill of the process but not of the machine; the loss
// of one machine is tolerated by the quorum (and the other DC), not by fsync.
//
// # Record cache
//
// Each replica keeps the newest committed record of recently used keys in
// memory (at most 131072 entries and 24 MiB; values over 1 KiB are cached as
// tag only), so replica reads and the committer's tag checks skip Badger.
// Only the committer updates it, after each commit; a reader that missed
// fills it only if no commit was published meanwhile, so a cached record is
// always exactly the committed one.
//
// # Replies
//
// Every write answers identically on every node and in every DC, because
// the middlebox compares DCs' replies byte for byte: SET and MSET answer +OK;
// DEL (and UNLINK) answers the number of distinct keys it names, whatever they
// held, because the number of keys that "existed" depends on each replica
// set's state. After DEL every named key is absent. MSET and MGET are not
// atomic across keys (each key is its own register). SET options (EX, NX,
// ...) are refused with an error. Deleted keys keep a tombstone (with its
// tag) forever.
//
// Unknown commands, wrong arity, keys over MaxKey (4 KiB) and arguments over
// MaxValue (1 MiB, refused without being buffered) get an error reply and
// the connection stays usable; input that is not RESP at all gets a protocol
// error and the connection is closed, as Redis does. HELLO 3 answers
// NOPROTO (clients fall back to RESP2 silently), CONFIG GET answers what
// redis-benchmark asks, CLIENT SETINFO/SETNAME answer +OK.
//
// # Catch-up between DCs
//
// Each store keeps a change index (one entry per key, ordered by the tag
// of its current record, written in the record's transaction). A node of a
// DC that missed writes, asked by the middlebox (CATCHUP on the order
// stream), pulls from another DC's node (Config.Remotes) every record above
// a tag cursor in tag order, merged over a quorum of that DC, and writes
// each at its own quorum with the record's tag (docs/design-lifecycle.md).
//
// # Pipelining
//
// Pipelined commands on distinct keys run concurrently; a command touching a
// key used earlier in the same batch waits, so each connection keeps Redis's
// in-order semantics. Peer connections are persistent and carry many
// requests in flight, batched into one write per wake-up.
package kvs
