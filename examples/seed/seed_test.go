package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/podnet/podnet/podnettest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSeedScenario runs the example's scenario and asserts each result,
// including that the internet is unreachable before forwarding and
// masquerade are set.
func TestSeedScenario(t *testing.T) {
	podnettest.RequirePrivilege(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	res, err := run(ctx, &out, false)
	t.Log("\n" + out.String())
	require.NoError(t, err)
	assert.True(t, res.OrangeToPurple, "orange -> purple")
	assert.True(t, res.PurpleToOrange, "purple -> orange")
	assert.False(t, res.InternetBeforeNAT, "the internet answered before forwarding and masquerade were on")
	assert.True(t, res.OrangeToInternet, "orange -> internet")
	assert.True(t, res.PurpleToInternet, "purple -> internet")
	assert.Equal(t, "203.0.113.1", res.HostOutsideAddr.String())
	assert.Equal(t, res.HostOutsideAddr, res.InternetSawSource, "the internet saw an unmasqueraded source")
	assert.Equal(t, "192.168.52.3", res.PurpleAddr.String())
	assert.True(t, res.PurpleAddrFreed, "purple's address was not released")
	assert.True(t, res.OK())
	assert.Contains(t, out.String(), "teardown")
}
