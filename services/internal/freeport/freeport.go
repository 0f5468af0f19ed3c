// Package freeport hands tests loopback TCP ports for servers they start as
// separate processes (mcc, redis-server, Orthanc), which must be told their
// port before they bind it.
//
// A port the kernel picks for a listener on port 0 comes from the ephemeral
// range, the same range it picks from for the local end of every outgoing
// connection. Between the test's choice and the server's bind, a connection
// made meanwhile (by a server started just before, calling its peers) can
// take the port, and the server fails with "address already in use". The
// ports handed out here lie below the ephemeral range, where no outgoing
// connection lands, and are checked free by binding them.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// lowest is the lowest port handed out.
const lowest = 20000

// Take returns n distinct loopback ports that were free a moment ago, below
// the ephemeral range. All are held open together while they are chosen.
func Take(t testing.TB, n int) []int {
	t.Helper()
	high := ephemeralStart()
	var ports []int
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries == 1000 {
			t.Fatalf("freeport: no free loopback port in [%d, %d) after %d tries", lowest, high, tries)
		}
		port := lowest + rand.IntN(high-lowest)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		held = append(held, l)
		ports = append(ports, port)
	}
	return ports
}

// One returns one port, as Take(t, 1).
func One(t testing.TB) int {
	t.Helper()
	return Take(t, 1)[0]
}

// ephemeralStart is the first port of the kernel's ephemeral range, or
// Linux's default start where it cannot be read.
func ephemeralStart() int {
	const linuxDefault = 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return linuxDefault
	}
	var low, high int
	if _, err := fmt.Sscan(strings.TrimSpace(string(b)), &low, &high); err != nil || low <= lowest+1000 {
		return linuxDefault
	}
	return low
}
