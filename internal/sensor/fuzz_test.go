package sensor

import (
	"strings"
	"testing"
)

// FuzzDecodeRecord: whatever bytes a sample holds, decoding returns a record or an error, never a panic, and a
// decoded record's strings hold no NUL (each ended at its own).
func FuzzDecodeRecord(f *testing.F) {
	head := make([]byte, recordHeadSize)
	head[0] = byte(kernelEwKindEW_KIND_FILE_OPEN)
	f.Add(append(head, []byte("/c\x00/p\x00/a\x00\x00b\x00")...))
	f.Add(head)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := decodeRecord(raw)
		if err != nil {
			return
		}
		for _, s := range []string{r.CgroupPath, r.Path, r.ArgPath, r.ArgPath2, r.BasePath} {
			if strings.ContainsRune(s, 0) {
				t.Fatalf("decoded string %q holds a NUL", s)
			}
		}
	})
}
