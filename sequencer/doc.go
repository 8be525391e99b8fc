// Package sequencer is the middlebox's global order for forked writes: it
// gives every first-seen byte range of a sequenced client stream a position
// G in one monotonic order, so that every DC computes the same tag for the
// same write (docs/design-sequencer.md).
//
//	client segment (seq, len) ─► Flow.Observe ─► new bytes [hs, end)? ─► Clock.Next ─► Range{start, end, G}
//	merged client ack          ─► Flow.Ack     ─► ranges every branch holds are freed
//	Clock.Want ─► (edge: CeilingFile.Store, fsync) ─► Clock.Persisted
//
// The package is pure: time is passed in as Unix nanoseconds and the only
// file I/O (the persisted ceiling) lives in ceiling.go, outside the core.
// Clock and Flow are not safe for concurrent use; the middlebox calls them
// under its flow-table lock.
package sequencer
