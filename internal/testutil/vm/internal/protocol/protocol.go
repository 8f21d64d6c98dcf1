// Package protocol is what vm.Run and its guest init agree on: where the command to run lies in the
// initramfs, what it says (including which serial port carries the output), and the console lines that report
// the command's start and exit.
package protocol

const (
	// CommandPath is the guest path of the JSON-encoded Command.
	CommandPath = "/vm/command.json"
	// StartMarker is printed on the console right before the command starts.
	StartMarker = "ESCAPEWATCH-VM-START"
	// ExitMarker, followed by a space and the exit status, is printed on the console once the command's
	// output has drained from Command.Output.
	ExitMarker = "ESCAPEWATCH-VM-EXIT"
)

// Command is the command the guest init runs.
type Command struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env"`
	Dir  string   `json:"dir"`
	// Output is the guest device of the serial port that carries the command's stdout and stderr, kept apart
	// from the console so kernel messages never mix into it. It depends on the machine qemu emulates (a PC's
	// second UART, a PCI UART on arm64's virt board), which the host knows and the guest init does not.
	Output string `json:"output"`
}
