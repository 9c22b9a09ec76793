package podnet

import (
	"context"
	"errors"
)

// setupNAT turns on forwarding and masquerading for the network as asked.
func (nw *Network) setupNAT(ctx context.Context, s *NetworkSpec) error {
	if s.masq || s.forwarding {
		return errors.New("masquerade and forwarding are not available yet")
	}
	return nil
}
