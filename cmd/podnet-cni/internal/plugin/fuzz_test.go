package plugin

import (
	"errors"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// FuzzParseConfig feeds arbitrary configurations and CNI_ARGS to the
// parser: it never panics, and every rejection is a spec error with one of
// the codes the plugin documents.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","type":"podnet-cni","bridge":"cni0","ipam":{"type":"host-local","ranges":[[{"subnet":"10.88.0.0/16"}]]}}`), "")
	f.Add([]byte(`{"cniVersion":"0.4.0","name":"n","type":"podnet-cni","bridge":"br;x","ipMasq":true,"ipam":{"type":"host-local","subnet":"10.1.0.0/24","rangeStart":"10.1.0.9"}}`), "IgnoreUnknown=1;K8S_POD_NAME=a")
	f.Add([]byte(`{"cniVersion":"9.9.9","bridge":"","ipam":{"ranges":[[{"subnet":"10.0.0.0/8"}],[{"subnet":"10.0.0.0/16"}]]},"vlan":3}`), "IP=10.0.0.5")
	f.Add([]byte(`[1,2`), "a=b=c")
	f.Fuzz(func(t *testing.T, data []byte, args string) {
		c, err := ParseConfig(data, args)
		if err == nil {
			if c.Bridge == "" || len(c.RangeSets) == 0 {
				t.Fatalf("accepted a configuration without bridge or ranges: %+v", c)
			}
			return
		}
		var te *types.Error
		if !errors.As(err, &te) {
			t.Fatalf("error %v is not a *types.Error", err)
		}
		switch te.Code {
		case 1, 2, 4, 6, 7:
		default:
			t.Fatalf("unexpected code %d: %v", te.Code, err)
		}
	})
}
