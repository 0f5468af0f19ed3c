// Package peer is how one MCC service calls another: over a real gRPC
// connection (to this process in `all` mode, to another process in split
// mode), with the same authentication as any client.
//
// A call either acts for the user (OnBehalf forwards the caller's token, so
// the callee applies the user's own rights), or as the service itself
// (AsService signs a short-lived token with the service role, which sees the
// whole community: use it to check that a referenced record exists, and do
// the authorization in the calling service).
package peer

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/countymcc/mcc/services/internal/platform/audit"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
)

// Peers holds the connections to the other services.
type Peers struct {
	service string
	keys    *auth.Keys
	clock   clock.Clock
	conns   map[string]*grpc.ClientConn

	mu     sync.Mutex
	tokens map[string]cachedToken
}

type cachedToken struct {
	token   string
	expires time.Time
}

// New returns the peers of service. conns maps service names to
// connections; the caller owns and closes them. clk must be the clock keys
// use, so cached tokens expire on the same time line.
func New(service string, keys *auth.Keys, clk clock.Clock, conns map[string]*grpc.ClientConn) *Peers {
	return &Peers{service: service, keys: keys, clock: clk, conns: conns, tokens: map[string]cachedToken{}}
}

// Conn returns the connection to a service.
func (p *Peers) Conn(name string) (*grpc.ClientConn, error) {
	c, ok := p.conns[name]
	if !ok {
		known := make([]string, 0, len(p.conns))
		for k := range p.conns {
			known = append(known, k)
		}
		slices.Sort(known)
		return nil, fmt.Errorf("peer: no connection to %s (have %s); does this process know its address (-%s.addr)?", name, strings.Join(known, ", "), name)
	}
	return c, nil
}

// OnBehalf returns ctx with the caller's bearer token, request ID and
// purpose of use on outgoing calls.
func OnBehalf(ctx context.Context) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	if v := md.Get("authorization"); len(v) > 0 {
		out.Set("authorization", v[0])
	}
	if v := md.Get("x-request-id"); len(v) > 0 {
		out.Set("x-request-id", v[0])
	}
	// The purpose of use travels with the caller's token, so the audit
	// records of the calls a service makes for it carry the same purpose.
	if v := md.Get(audit.PurposeMetadata); len(v) > 0 {
		out.Set(audit.PurposeMetadata, v[0])
	}
	return metadata.NewOutgoingContext(ctx, out)
}

// serviceTokenTTL is the life of a service token; one is reused until it is
// within a minute of expiring.
const serviceTokenTTL = 5 * time.Minute

// AsService returns ctx whose outgoing calls carry a token of this service,
// with the service role, in community.
func (p *Peers) AsService(ctx context.Context, community string) (context.Context, error) {
	tok, err := p.serviceToken(community)
	if err != nil {
		return nil, err
	}
	return metadata.NewOutgoingContext(ctx, metadata.Pairs("authorization", "Bearer "+tok)), nil
}

func (p *Peers) serviceToken(community string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clock.Now()
	if t, ok := p.tokens[community]; ok && t.expires.Sub(now) > time.Minute {
		return t.token, nil
	}
	tok, err := p.keys.Issue(auth.ServiceCaller(community, ServiceFacility, p.service), serviceTokenTTL)
	if err != nil {
		return "", err
	}
	p.tokens[community] = cachedToken{token: tok, expires: now.Add(serviceTokenTTL)}
	return tok, nil
}

// ServiceFacility is the facility named in service tokens. It is not a
// member facility: the service role sees the community, not a facility.
const ServiceFacility = "facilities/mcc-system"
