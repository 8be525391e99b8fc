package ackmerge

import "time"

// BehindSince returns since when live branch k has held the others back
// (the lowest acknowledgement or reply coverage while another branch is
// ahead) without progress; zero when it does not, or for a removed or
// unknown branch. The middlebox reports it to the failure detector
// (failover.Detector.BranchLag).
func (f *Flow) BehindSince(k int) time.Time {
	if k < 0 || k >= len(f.br) || f.br[k].removed {
		return time.Time{}
	}
	return f.br[k].behindSince
}
