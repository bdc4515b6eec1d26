//go:build !race

package relay

// raceEnabled skips allocation counts, which the race detector inflates.
const raceEnabled = false
