package podnet

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Ownership marks name the process that created a kernel object, so that a
// later Sweep can tell the objects of a dead process from those of a live
// one. A mark is "podnet:<pid>:<start>:<label>", where start is the
// process's start time in clock ticks since boot (field 22 of
// /proc/PID/stat), so that a reused pid is not mistaken for the owner.
// Links carry it as their alias (IFLA_IFALIAS), sent in the same netlink
// message that creates them, so it costs nothing extra.

const markPrefix = "podnet:"

// Owner identifies a process: its pid and start time.
type Owner struct {
	PID   int
	Start uint64
}

var self = sync.OnceValue(func() Owner {
	o := Owner{PID: os.Getpid()}
	o.Start, _ = processStart(o.PID)
	return o
})

// Self returns the Owner of the calling process.
func Self() Owner { return self() }

// Alive reports whether the process o names is still running: a process with
// that pid exists and started at the same time.
func (o Owner) Alive() bool {
	st, err := processStart(o.PID)
	return err == nil && st == o.Start
}

func (o Owner) String() string { return fmt.Sprintf("pid %d (start %d)", o.PID, o.Start) }

// processStart reads the start time of pid from /proc.
func processStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and ')': skip past the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); start time is field 22.
	if len(f) < 20 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// Mark is an ownership mark: who created an object and for what.
type Mark struct {
	Owner Owner
	Label string // the lab, network or object the mark belongs to; may be empty
}

// String formats m as stored on kernel objects.
func (m Mark) String() string {
	return markPrefix + strconv.Itoa(m.Owner.PID) + ":" + strconv.FormatUint(m.Owner.Start, 10) + ":" + m.Label
}

// ParseMark parses a mark made by Mark.String. ok is false for anything
// that is not a podnet mark.
func ParseMark(s string) (m Mark, ok bool) {
	rest, found := strings.CutPrefix(s, markPrefix)
	if !found {
		return Mark{}, false
	}
	parts := strings.SplitN(rest, ":", 3)
	if len(parts) != 3 {
		return Mark{}, false
	}
	pid, err1 := strconv.Atoi(parts[0])
	start, err2 := strconv.ParseUint(parts[1], 10, 64)
	if err1 != nil || err2 != nil || pid <= 0 {
		return Mark{}, false
	}
	return Mark{Owner: Owner{PID: pid, Start: start}, Label: parts[2]}, true
}

func selfMark(label string) string { return Mark{Owner: Self(), Label: label}.String() }
