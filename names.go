package podnet

import (
	"crypto/rand"
	"encoding/hex"
	"errors"

	"github.com/vishvananda/netlink"
)

// maxIfName is the longest interface name the kernel accepts (IFNAMSIZ-1).
const maxIfName = 15

// maxNsName bounds namespace names; they become file names under /run/netns.
const maxNsName = 64

// validName reports whether s is made only of the characters podnet allows
// in interface and namespace names: ASCII letters, digits, '-', '_' and '.'.
// Everything else (spaces, quotes, ';', '/', ':', newlines, non-ASCII) is
// rejected so that a name can never be misread by the kernel, by `ip`, or
// by anything that later prints it.
func validName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-' || c == '_' || c == '.':
		default:
			return false
		}
	}
	return true
}

// ValidateLinkName reports whether name is usable as an interface name: 1 to
// 15 bytes of ASCII letters, digits, '-', '_' or '.', and not "." or "..".
// The error wraps ErrInvalidName and says what is wrong.
func ValidateLinkName(name string) error {
	switch {
	case name == "":
		return invalid(ErrInvalidName, "interface name is empty")
	case len(name) > maxIfName:
		return invalid(ErrInvalidName, "interface name %q is %d bytes, longer than %d", name, len(name), maxIfName)
	case name == "." || name == "..":
		return invalid(ErrInvalidName, "interface name %q is reserved", name)
	case !validName(name):
		return invalid(ErrInvalidName, "interface name %q has characters other than letters, digits, '-', '_' and '.'", name)
	}
	return nil
}

// ValidateNamespaceName reports whether name is usable as a named network
// namespace: 1 to 64 bytes of ASCII letters, digits, '-', '_' or '.', not
// starting with '.'.
func ValidateNamespaceName(name string) error {
	switch {
	case name == "":
		return invalid(ErrInvalidName, "namespace name is empty")
	case len(name) > maxNsName:
		return invalid(ErrInvalidName, "namespace name %q is %d bytes, longer than %d", name, len(name), maxNsName)
	case name[0] == '.':
		return invalid(ErrInvalidName, "namespace name %q starts with '.'", name)
	case !validName(name):
		return invalid(ErrInvalidName, "namespace name %q has characters other than letters, digits, '-', '_' and '.'", name)
	}
	return nil
}

// genName returns prefix followed by random hex digits, 15 bytes at most.
func genName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	s := prefix + hex.EncodeToString(b[:])
	if len(s) > maxIfName {
		s = s[:maxIfName]
	}
	return s
}

func isLinkNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf)
}
