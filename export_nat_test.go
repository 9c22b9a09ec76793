package podnet

// SetProgramSearch makes podnet look programs up with look and then in
// dirs, for tests that pretend iptables is not installed; the returned
// function restores the defaults. Not safe to use while other tests run.
func SetProgramSearch(look func(string) (string, error), dirs []string) (restore func()) {
	oldLook, oldDirs := lookPath, sbinDirs
	lookPath, sbinDirs = look, dirs
	return func() { lookPath, sbinDirs = oldLook, oldDirs }
}

// NamespaceStates returns how many namespaces podnet keeps iptables or
// sysctl state for: 0 once every object is closed.
func NamespaceStates() int {
	statesMu.Lock()
	defer statesMu.Unlock()
	return len(states)
}
