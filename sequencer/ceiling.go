package sequencer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ceilingMagic opens a ceiling file, so a wrong path is not read as a
// number.
const ceilingMagic = "sdnkvs-sequencer-ceiling v1 "

// CeilingFile is the file holding a clock's reserved ceiling. Store
// replaces it atomically (temporary file, fsync, rename, fsync of the
// directory), so after a crash it holds the old or the new ceiling, never
// a torn one.
type CeilingFile struct{ Path string }

// Load returns the stored ceiling, 0 if the file does not exist, and an
// error naming the file if it exists but cannot be read or parsed (a clock
// must not start from a guess).
func (f CeilingFile) Load() (uint64, error) {
	b, err := os.ReadFile(f.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("sequencer state %s: %w", f.Path, err)
	}
	s, ok := strings.CutPrefix(string(b), ceilingMagic)
	s, nl := strings.CutSuffix(s, "\n")
	if !ok || !nl {
		return 0, fmt.Errorf("sequencer state %s: not a sequencer state file", f.Path)
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v > MaxG {
		return 0, fmt.Errorf("sequencer state %s: bad ceiling %q", f.Path, s)
	}
	return v, nil
}

// Store durably replaces the stored ceiling with v.
func (f CeilingFile) Store(v uint64) error {
	dir := filepath.Dir(f.Path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("sequencer state %s: %w", f.Path, err)
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(f.Path)+".tmp*")
	if err != nil {
		return fmt.Errorf("sequencer state %s: %w", f.Path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = fmt.Fprintf(tmp, "%s%d\n", ceilingMagic, v)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), f.Path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("sequencer state %s: %w", f.Path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
