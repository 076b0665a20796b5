package lab

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
)

var (
	portsMu sync.Mutex
	handed  = map[int]bool{} // ports FreePorts returned in this process; never handed out twice
)

// FreePorts returns n distinct ports of 127.0.0.1 that are free for both
// TCP and UDP right now and that FreePorts did not return before in this
// process (a port handed to one node is not handed to the next while the
// first is still starting).
func FreePorts(n int) ([]int, error) {
	var ports []int
	for tries := 0; len(ports) < n && tries < 100*n+100; tries++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("lab: free ports: %w", err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		ln.Close()
		if err != nil {
			continue // taken for UDP
		}
		pc.Close()
		portsMu.Lock()
		fresh := !handed[p]
		handed[p] = true
		portsMu.Unlock()
		if fresh {
			ports = append(ports, p)
		}
	}
	if len(ports) < n {
		return nil, errors.New("lab: cannot find free loopback ports")
	}
	return ports, nil
}

// Loopback is 127.0.0.1:port.
func Loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }
