// Package cnicompare runs the same CNI configuration list through
// podnet-cni and through the reference bridge and host-local plugins
// (github.com/containernetworking/plugins, pinned in this module's go.mod)
// and compares them: what they do (TestSameAsReference,
// TestRequestedSameAsReference) and how fast (BenchmarkAddDel, and
// BenchmarkDelConcurrent for DEL throughput). Both run through libcni with
// their binaries, each in its own sandbox namespace standing in for the
// host.
//
//	cd bench && go test -count=1 ./cnicompare/
//	cd bench && go test -run '^$' -bench AddDel -benchtime 1x -v ./cnicompare/ [-containers=100] [-dual] [-schedule=blocks|interleaved]
//	cd bench && go test -run '^$' -bench DelConcurrent -benchtime 1x -v ./cnicompare/ [-containers=100] [-concurrent=8]
//
// The binaries are built by TestMain: bridge and host-local from this
// module (they are its go.mod's tools), podnet-cni from ../cmd/podnet-cni
// in the root module. The reference plugins are a dependency of this
// module only, never of podnet's.
package cnicompare
