package kvs

// Node identity: what a node knows about itself from its own data
// directory (docs/design-kvssafety.md). identity.json holds the cluster id,
// the node id, the membership hash, whether the node is a voter, the
// members it has seen become voters, and the id of its Badger data set (a
// marker record inside Badger carries the same id, so a Badger directory
// that lost its contents, e.g. a deleted MANIFEST, is noticed).

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

const identityFile = "identity.json"

// identity is persisted as identity.json. Guarded by identityStore.mu.
type identity struct {
	Cluster     string   `json:"cluster"`
	NodeID      int      `json:"node_id"`
	Membership  string   `json:"membership"`
	Voter       bool     `json:"voter"`
	KnownVoters []uint64 `json:"known_voters,omitempty"`
	DataID      string   `json:"data_id"`
}

// identityStore reads and writes identity.json (in memory only for
// in-memory nodes). Safe for concurrent use.
type identityStore struct {
	path string // "" in memory
	mu   sync.Mutex
	id   identity
}

// loadIdentity reads dir's identity; found=false when there is none.
func loadIdentity(dir string) (*identityStore, bool, error) {
	s := &identityStore{}
	if dir == "" {
		return s, false, nil
	}
	s.path = filepath.Join(dir, identityFile)
	b, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return s, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("kvs: read %s: %w", s.path, err)
	}
	if err := json.Unmarshal(b, &s.id); err != nil {
		return nil, false, fmt.Errorf("kvs: %s is damaged (%v): move it away to rebuild this node as a learner", s.path, err)
	}
	return s, true, nil
}

func newDataID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// get returns a copy of the identity.
func (s *identityStore) get() identity {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.id
	id.KnownVoters = slices.Clone(id.KnownVoters)
	return id
}

// update changes the identity and persists it (fsynced) before returning.
func (s *identityStore) update(f func(*identity)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.id
	next.KnownVoters = slices.Clone(s.id.KnownVoters)
	f(&next)
	if s.path != "" {
		if err := writeFileSync(s.path, next); err != nil {
			return err
		}
	}
	s.id = next
	return nil
}

// knows reports whether member id was seen as a voter.
func (s *identityStore) knows(id uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.id.KnownVoters, id)
}

func writeFileSync(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err == nil {
		_, err = f.Write(append(b, '\n'))
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		if d, derr := os.Open(filepath.Dir(path)); derr == nil {
			d.Sync()
			d.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("kvs: write %s: %w", path, err)
	}
	return nil
}

// checkIdentity compares a stored identity with the configuration.
func checkIdentity(id identity, cfg Config, membership string) error {
	if id.Cluster != cfg.Cluster {
		return fmt.Errorf("kvs: data directory %s belongs to cluster %q, not %q", cfg.Dir, id.Cluster, cfg.Cluster)
	}
	if id.NodeID != cfg.ID {
		return fmt.Errorf("kvs: data directory %s belongs to node %d, not %d", cfg.Dir, id.NodeID, cfg.ID)
	}
	if id.Membership != membership && !cfg.Reconfigure {
		return fmt.Errorf("kvs: the peer list differs from the membership stored in %s (hash %s, now %s): "+
			"if the cluster was deliberately changed, restart every node once with --reconfigure", cfg.Dir, id.Membership, membership)
	}
	return nil
}
