// Package protocol is what vm.Run and its guest init agree on: where the command to run lies in the
// initramfs, which serial port carries its output, and the console lines that report its start and exit.
package protocol

const (
	// CommandPath is the guest path of the JSON-encoded Command.
	CommandPath = "/vm/command.json"
	// OutputDevice is the serial port (qemu's second -serial) that carries the command's stdout and stderr,
	// kept apart from the console so kernel messages never mix into it.
	OutputDevice = "/dev/ttyS1"
	// StartMarker is printed on the console right before the command starts.
	StartMarker = "ESCAPEWATCH-VM-START"
	// ExitMarker, followed by a space and the exit status, is printed on the console once the command's
	// output has drained from OutputDevice.
	ExitMarker = "ESCAPEWATCH-VM-EXIT"
)

// Command is the command the guest init runs.
type Command struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env"`
	Dir  string   `json:"dir"`
}
