package podnet

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Crash records: state podnet changes in a namespace that is not a kernel
// object it can mark (a sysctl it set, an nf_tables table it created) is
// recorded in a file under StateDir/<namespace cookie>/ before the change,
// naming the owner process and what to undo. Close removes the record; a
// Sweep undoes the records of dead owners. Cookies are never reused while
// the machine is up, and /run is emptied at boot.

// StateDir holds podnet's crash records, one directory per namespace.
const StateDir = "/run/podnet/state"

func stateDir(key uint64) string { return filepath.Join(StateDir, fmt.Sprintf("%016x", key)) }

func recordName(kind, id string) string { return kind + "." + hex.EncodeToString([]byte(id)) }

// putRecord writes the record kind/id for the namespace key: the owner's
// mark, then lines. It is written to a temporary file and renamed, so a
// reader sees all of it or nothing.
func putRecord(key uint64, kind, id string, lines ...string) error {
	dir := stateDir(key)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	body := selfMark(kind) + "\n" + strings.Join(lines, "\n") + "\n"
	tmp := filepath.Join(dir, ".tmp-"+recordName(kind, id)+"-"+fmt.Sprint(os.Getpid()))
	if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, recordName(kind, id)))
}

// dropRecord removes the record kind/id, and the namespace's directory
// once it is empty.
func dropRecord(key uint64, kind, id string) {
	dir := stateDir(key)
	_ = os.Remove(filepath.Join(dir, recordName(kind, id)))
	_ = os.Remove(dir) // fails, harmlessly, while other records remain
}

// stateRecord is one crash record read back.
type stateRecord struct {
	kind, id string
	mark     Mark
	lines    []string
}

// readRecords returns the records of the namespace key.
func readRecords(key uint64) ([]stateRecord, error) {
	dir := stateDir(key)
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var out []stateRecord
	for _, e := range ents {
		kind, hexID, ok := strings.Cut(e.Name(), ".")
		if !ok || strings.HasPrefix(e.Name(), ".tmp-") {
			continue
		}
		id, err := hex.DecodeString(hexID)
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		m, ok := ParseMark(lines[0])
		if !ok {
			continue
		}
		out = append(out, stateRecord{kind: kind, id: string(id), mark: m, lines: lines[1:]})
	}
	return out, nil
}
