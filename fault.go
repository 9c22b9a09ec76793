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
