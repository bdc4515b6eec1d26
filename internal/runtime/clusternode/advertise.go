package clusternode

import (
	"fmt"
	"net"
)

// AdvertiseAddr returns the address other nodes should dial to reach a
// listener bound at bound (host:port with a concrete port). advertiseHost,
// when set, replaces the host; otherwise the bound host is used unless it is
// a wildcard, in which case the machine's first non-loopback address is.
// A wildcard address is never returned.
func AdvertiseAddr(advertiseHost, bound string) (string, error) {
	host, port, err := net.SplitHostPort(bound)
	if err != nil {
		return "", fmt.Errorf("clusternode: bad address %q: %w", bound, err)
	}
	if advertiseHost != "" {
		if h, p, err := net.SplitHostPort(advertiseHost); err == nil {
			// A full host:port advertise (e.g. behind NAT) wins as given.
			if h == "" || isWildcard(h) {
				return "", fmt.Errorf("clusternode: advertise address %q is a wildcard", advertiseHost)
			}
			return net.JoinHostPort(h, p), nil
		}
		if isWildcard(advertiseHost) {
			return "", fmt.Errorf("clusternode: advertise address %q is a wildcard", advertiseHost)
		}
		return net.JoinHostPort(advertiseHost, port), nil
	}
	if host != "" && !isWildcard(host) {
		return bound, nil
	}
	ip, err := firstNonLoopback()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(ip, port), nil
}

func isWildcard(host string) bool {
	ip := net.ParseIP(host)
	return host == "" || (ip != nil && ip.IsUnspecified())
}

func firstNonLoopback() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("clusternode: list interfaces: %w", err)
	}
	var v6 string
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() {
			continue
		}
		if ipn.IP.To4() != nil {
			return ipn.IP.String(), nil
		}
		if v6 == "" {
			v6 = ipn.IP.String()
		}
	}
	if v6 != "" {
		return v6, nil
	}
	return "", fmt.Errorf("clusternode: no non-loopback address to advertise; set --advertise")
}
