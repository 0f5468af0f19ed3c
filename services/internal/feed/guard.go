package feed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// guard decides which addresses webhooks may reach, against server-side
// request forgery: a subscription must not make MCC call the cloud
// metadata service, link-local or multicast addresses, or (unless allowed)
// itself. Private LAN addresses are allowed on purpose, because county
// hospital systems live there. The check runs when a subscription is
// saved, and again on the resolved address of every connection, so a name
// that later resolves somewhere else (DNS rebinding) is refused too.
type guard struct {
	allowLoopback bool
}

// errForbidden marks an address webhooks may not reach.
var errForbidden = errors.New("forbidden webhook address")

// isMetadata reports whether ip is a cloud metadata or host service
// outside the link-local range: Alibaba Cloud, Azure's host endpoint,
// Oracle Cloud, and AWS's IPv6 endpoint (inside the private fc00::/7).
func isMetadata(ip netip.Addr) bool {
	switch ip.String() {
	case "100.100.100.200", "168.63.129.16", "192.0.0.192", "fd00:ec2::254":
		return true
	}
	return false
}

// Special ranges: "this network", limited broadcast and the reserved
// class E, and NAT64, whose addresses embed an IPv4 address to check.
var (
	thisNetwork = netip.MustParsePrefix("0.0.0.0/8")
	reserved    = netip.MustParsePrefix("240.0.0.0/4")
	nat64       = netip.MustParsePrefix("64:ff9b::/96")
)

// checkIP returns an error wrapping errForbidden if webhooks may not reach
// ip.
func (g guard) checkIP(ip netip.Addr) error {
	ip = ip.Unmap()
	if nat64.Contains(ip) {
		b := ip.As16()
		return g.checkIP(netip.AddrFrom4([4]byte(b[12:])))
	}
	var why string
	switch {
	case ip.IsUnspecified() || thisNetwork.Contains(ip):
		why = "an unspecified address"
	case ip.IsLoopback():
		if g.allowLoopback {
			return nil
		}
		why = "a loopback address (allowed only with -feed.allow-loopback)"
	case ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast():
		why = "a link-local address, the range of cloud metadata services"
	case ip.IsMulticast() || ip.IsInterfaceLocalMulticast():
		why = "a multicast address"
	case reserved.Contains(ip):
		why = "a reserved or broadcast address"
	case isMetadata(ip):
		why = "a cloud metadata address"
	}
	if why == "" {
		return nil
	}
	return fmt.Errorf("%s is %s: %w", ip, why, errForbidden)
}

// resolveTimeout bounds the lookup of a webhook host when a subscription is
// saved.
const resolveTimeout = 3 * time.Second

// checkURL checks a webhook URL as it is saved: https, a host, no user
// information, and no forbidden address, literally or as the host resolves
// now. A host that does not resolve now is accepted: it is checked again
// at each connection.
func (g guard) checkURL(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return errors.New("not a URL")
	case u.Scheme != "https":
		return errors.New("must be an https URL: deliveries carry health information")
	case u.Hostname() == "":
		return errors.New("has no host")
	case u.User != nil:
		return errors.New("must not carry a user name or password; authenticate the deliveries by their signature")
	case u.Fragment != "":
		return errors.New("must not have a #fragment")
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if ip, err := netip.ParseAddr(host); err == nil {
		return g.checkIP(ip)
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return g.checkIP(netip.IPv6Loopback())
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil
	}
	for _, ip := range ips {
		if err := g.checkIP(ip); err != nil {
			return fmt.Errorf("%s resolves to %w", host, err)
		}
	}
	return nil
}

// control is a net.Dialer Control function: it runs on the address a
// connection is about to reach, after name resolution, and refuses
// forbidden ones.
func (g guard) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("webhook connection to %q: %w", address, errForbidden)
	}
	return g.checkIP(ap.Addr())
}
