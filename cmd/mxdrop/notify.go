package main

import (
	"net"
	"os"
)

// sdNotify sends a state line ("READY=1", "STOPPING=1", "RELOADING=1") to systemd when
// mxdrop runs as a Type=notify service, and does nothing otherwise. The protocol is one
// datagram on the unix socket named by $NOTIFY_SOCKET (sd_notify(3)); a library for these
// few lines would add a dependency for nothing.
func sdNotify(state string) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:] // abstract socket
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return
	}
	defer conn.Close()
	conn.Write([]byte(state))
}
