package podnet

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Sentinel errors. Every error returned by podnet that has one of these
// causes matches it with errors.Is; errors that come from the kernel also
// match the kernel's errno (for example unix.EEXIST).
var (
	// ErrExists reports that an object of that name already exists.
	ErrExists = errors.New("already exists")
	// ErrNotFound reports that a named object does not exist.
	ErrNotFound = errors.New("not found")
	// ErrClosed reports use of an object after its Close.
	ErrClosed = errors.New("use of closed object")
	// ErrInvalidName reports an interface or namespace name the kernel or
	// podnet would reject (empty, too long, illegal characters).
	ErrInvalidName = errors.New("invalid name")
	// ErrInvalidAddress reports an address or prefix that is invalid where it
	// is used: the zero value, the wrong family, host bits set where they are
	// not allowed.
	ErrInvalidAddress = errors.New("invalid address")
	// ErrInvalidRoute reports a route that cannot be installed as described,
	// such as a gateway outside every connected prefix.
	ErrInvalidRoute = errors.New("invalid route")
	// ErrInvalidOption reports an option value out of range or contradicting
	// another option.
	ErrInvalidOption = errors.New("invalid option")
	// ErrNotPermitted reports that the process lacks the privilege
	// (CAP_NET_ADMIN, CAP_SYS_ADMIN) for the operation.
	ErrNotPermitted = errors.New("operation not permitted")
)

// OpError is the error type returned by podnet operations. It names the
// operation and the object it was applied to, and wraps the cause.
//
// errors.Is matches both podnet's sentinel errors and the kernel errno that
// caused the failure: an EEXIST from the kernel matches ErrExists and
// unix.EEXIST.
type OpError struct {
	Op   string // operation, e.g. "create"
	Kind string // object kind, e.g. "bridge", "veth", "namespace"
	Name string // object name, may be empty
	Err  error  // the cause
}

func (e *OpError) Error() string {
	s := "podnet: " + e.Op + " " + e.Kind
	if e.Name != "" {
		s += " " + fmt.Sprintf("%q", e.Name)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the cause.
func (e *OpError) Unwrap() error { return e.Err }

// Is maps kernel errnos onto podnet's sentinel errors.
func (e *OpError) Is(target error) bool {
	var errno unix.Errno
	if !errors.As(e.Err, &errno) {
		return false
	}
	switch target {
	case ErrExists:
		return errno == unix.EEXIST
	case ErrNotFound:
		return errno == unix.ENOENT || errno == unix.ENODEV || errno == unix.ESRCH
	case ErrNotPermitted:
		return errno == unix.EPERM || errno == unix.EACCES
	case ErrInvalidRoute:
		return errno == unix.ENETUNREACH
	}
	return false
}

func opErr(op, kind, name string, err error) error {
	if err == nil {
		return nil
	}
	var oe *OpError
	if errors.As(err, &oe) && oe.Op == op && oe.Kind == kind && oe.Name == name {
		return err
	}
	return &OpError{Op: op, Kind: kind, Name: name, Err: err}
}

// invalid builds a validation error wrapping sentinel with a description.
func invalid(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)
}

// isGone reports whether err means the object is already gone, which Close
// treats as success.
func isGone(err error) bool {
	return errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT) ||
		errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EADDRNOTAVAIL) ||
		errors.Is(err, ErrNotFound) || isLinkNotFound(err)
}
