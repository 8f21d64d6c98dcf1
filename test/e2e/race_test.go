//go:build race

package e2e

// raceDetector says the suite runs under the race detector (go test -race): the sensor it drives is then built
// with the detector too, so that a data race in the real binary fails the test that provoked it.
const raceDetector = true
