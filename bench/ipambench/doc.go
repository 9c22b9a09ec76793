// Package ipambench compares the ipam package's persistent store with CNI
// host-local's disk allocator on the same workload. It holds only
// benchmarks; run them with
//
//	cd bench && go test -run '^$' -bench . ./ipambench/
//
// Both allocators keep 1,000 addresses allocated in a /16 and then churn:
// each op allocates an address for a new owner and releases it by owner.
// The podnet store makes every change durable (fdatasync) before it
// returns; host-local writes one file per address and never fsyncs, so
// the comparison favours host-local on durability.
package ipambench
