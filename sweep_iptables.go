package podnet

// listMarkedRules and deleteMarkedRule find and remove iptables rules that
// carry an ownership mark; they are filled in with the NAT support.
func listMarkedRules(ns *Namespace, where string) ([]Object, error) { return nil, nil }

func deleteMarkedRule(ns *Namespace, o Object) error { return nil }
