package linmodel

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/anishathalye/porcupine"
)

// Check runs porcupine on ops with Model (timeout bounds the search). When
// the history is not linearizable (or the search timed out), it writes the
// visualization into dir and returns its path too.
func Check(ops []porcupine.Operation, timeout time.Duration, dir string) (porcupine.CheckResult, string) {
	res, info := porcupine.CheckOperationsVerbose(Model, ops, timeout)
	if res == porcupine.Ok {
		return res, ""
	}
	path := filepath.Join(dir, fmt.Sprintf("sdnkvs-lin-%d.html", time.Now().UnixNano()))
	if f, err := os.Create(path); err == nil {
		porcupine.Visualize(Model, info, f)
		f.Close()
	}
	return res, path
}
