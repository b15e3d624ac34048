package bench

import "time"

// ProcessCPU returns the user plus system CPU time this process (all its
// threads) has used so far, and whether it is known on this platform.
func ProcessCPU() (time.Duration, bool) { return processCPU() }
