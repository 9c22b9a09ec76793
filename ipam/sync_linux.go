package ipam

import "golang.org/x/sys/unix"

// datasync flushes the file's data, and the metadata needed to read it back,
// to stable storage.
func datasync(fd int) error { return unix.Fdatasync(fd) }
