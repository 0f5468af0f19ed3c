package freeport

import (
	"net"
	"strconv"
	"testing"
)

func TestTakeGivesDistinctBindablePortsBelowTheEphemeralRange(t *testing.T) {
	ports := Take(t, 20)
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] {
			t.Errorf("port %d handed out twice", p)
		}
		seen[p] = true
		if p < lowest || p >= ephemeralStart() {
			t.Errorf("port %d outside [%d, %d)", p, lowest, ephemeralStart())
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Errorf("port %d: %v", p, err)
			continue
		}
		l.Close()
	}
}

// An outgoing connection's local port comes from the ephemeral range, so
// it can never take a port Take handed out.
func TestOutgoingConnectionsStayInTheEphemeralRange(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for range 20 {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if p := c.LocalAddr().(*net.TCPAddr).Port; p < ephemeralStart() {
			t.Errorf("outgoing connection from port %d, below the ephemeral range's %d", p, ephemeralStart())
		}
		c.Close()
	}
}
