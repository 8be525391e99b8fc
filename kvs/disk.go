package kvs

// Disk space: a node refuses writes while its data directory's file
// system has less than Config.MinFreeDisk free, so Badger never runs out of
// space (Badger maps its files into memory: a write to a page the file
// system cannot back is a SIGBUS that kills the process). Reads are served
// throughout; writes resume once space is freed.

import (
	"time"

	"golang.org/x/sys/unix"
)

const diskPoll = 200 * time.Millisecond

// freeBytes is the space available to unprivileged writers under dir.
func freeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

func (n *Node) checkDisk() {
	free, err := freeBytes(n.cfg.Dir)
	if err != nil {
		return
	}
	full := free < n.cfg.MinFreeDisk
	if n.store.full.Swap(full) != full {
		if full {
			n.log.Error("disk space low: refusing writes, serving reads", "free", free, "min", n.cfg.MinFreeDisk)
		} else {
			n.log.Info("disk space recovered: accepting writes", "free", free)
		}
	}
}

func (n *Node) watchDisk() {
	defer n.wg.Done()
	t := time.NewTicker(diskPoll)
	defer t.Stop()
	for {
		n.checkDisk()
		select {
		case <-n.closing:
			return
		case <-t.C:
		}
	}
}

// DiskFull reports whether writes are refused for lack of disk space.
func (n *Node) DiskFull() bool { return n.store.full.Load() }

const errMisconf = "MISCONF disk space on this node is below --min-free-disk: writes are refused until space is freed (reads are served)"
