package podnet

import (
	"errors"

	"github.com/vishvananda/netlink"
)

// dumpTries bounds how many times redump reads a netlink dump.
const dumpTries = 5

// redump runs dump, a netlink dump request, again while the kernel says
// the dump was interrupted (NLM_F_DUMP_INTR: the table changed while it
// was being read, so the result may miss or repeat entries), at most
// dumpTries times in all. Namespaces are shared: another process adding
// or removing links while podnet lists them is normal, not an error.
func redump[T any](dump func() (T, error)) (T, error) {
	for try := 1; ; try++ {
		v, err := dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || try == dumpTries {
			return v, err
		}
	}
}
