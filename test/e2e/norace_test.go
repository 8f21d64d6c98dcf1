//go:build !race

package e2e

// raceDetector says the suite runs under the race detector; see race_test.go.
const raceDetector = false
