//go:build unix && !linux

package ipam

import "golang.org/x/sys/unix"

// datasync flushes the file to stable storage.
func datasync(fd int) error { return unix.Fsync(fd) }
