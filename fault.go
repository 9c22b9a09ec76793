package podnet

import "sync/atomic"

// faultHook, when set (by tests only), is called at named points inside
// multi-step operations; an error it returns makes the operation fail there,
// so tests can show that every step rolls back what came before.
var faultHook atomic.Pointer[func(point string) error]

func faultPoint(point string) error {
	if f := faultHook.Load(); f != nil {
		return (*f)(point)
	}
	return nil
}

// crashPoint marks a point on a teardown path. Teardown does not stop
// there; tests use it to kill the process at that point and show that a
// sweep cleans up whatever the dead process left.
func crashPoint(point string) { _ = faultPoint(point) }
