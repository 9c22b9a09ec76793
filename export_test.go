package podnet

// SetFaultHook installs f as the fault-injection hook for the duration of a
// test; the returned function removes it.
func SetFaultHook(f func(point string) error) (restore func()) {
	faultHook.Store(&f)
	return func() { faultHook.Store(nil) }
}
