package directory

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/argon2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/events"
	"github.com/countymcc/mcc/services/internal/platform/paging"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

// ClientConfig sets how OAuth2 clients get tokens.
type ClientConfig struct {
	// TokenTTL is the life of a client's token.
	TokenTTL time.Duration
	// LockAfter wrong secrets in a row lock a client for LockFor.
	LockAfter int
	LockFor   time.Duration
}

// RegisterFlags registers the client-credentials flags.
func (c *ClientConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.TokenTTL, "auth.client-token-ttl", 15*time.Minute, "life of a token issued to an OAuth2 client")
	fs.IntVar(&c.LockAfter, "auth.client-lock-after", 5, "wrong client secrets in a row that lock the client")
	fs.DurationVar(&c.LockFor, "auth.client-lock-for", 15*time.Minute, "how long a client stays locked after too many wrong secrets")
}

// Validate refuses settings that would make the grant useless or unsafe.
func (c ClientConfig) Validate() error {
	switch {
	case c.TokenTTL < time.Minute || c.TokenTTL > 24*time.Hour:
		return errors.New("-auth.client-token-ttl: must be between 1m and 24h")
	case c.LockAfter < 1:
		return errors.New("-auth.client-lock-after: must be at least 1")
	case c.LockFor <= 0:
		return errors.New("-auth.client-lock-for: must be positive")
	}
	return nil
}

// Option configures the directory.
type Option func(*Service)

// WithClients enables the OAuth2 client-credentials grant: IssueToken signs
// client tokens with keys.
func WithClients(keys *auth.Keys, cfg ClientConfig) Option {
	return func(s *Service) { s.keys, s.clientCfg = keys, cfg }
}

var clients = resource.Table[*directoryv1.Client]{
	Collection: "clients",
	Prefix:     "client/",
	New:        func() *directoryv1.Client { return &directoryv1.Client{} },
	Event:      "client",
	Facilities: func(c *directoryv1.Client) []string { return []string{c.GetFacility()} },
}

// SystemPartition holds what spans communities: the revocations every
// service must know. It is not a community.
const SystemPartition = store.Partition(auth.SystemCommunity)

// secretRecord is a client's secret (as an Argon2id hash) and its count of
// wrong tries, kept apart from the Client resource so no read returns it.
type secretRecord struct {
	Salt     []byte    `json:"salt"`
	Hash     []byte    `json:"hash"`
	Failures int       `json:"failures"`
	Locked   time.Time `json:"locked,omitzero"`
}

func secretKey(id string) string { return "clientsecret/" + id }

// Argon2id settings: OWASP's minimum (19 MiB, 2 passes). Tokens are asked
// for every quarter of an hour, so the cost stays low for honest clients
// and high for guessing.
const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
)

func hashSecret(secret string, salt []byte) []byte {
	return argon2.IDKey([]byte(secret), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
}

// CreateClient registers a client and returns its secret, once.
func (s *Service) CreateClient(ctx context.Context, req *directoryv1.CreateClientRequest) (*directoryv1.CreateClientResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	id := uuid.NewString()
	secretBytes := make([]byte, 32)
	salt := make([]byte, 16)
	if _, err := rand.Read(secretBytes); err != nil {
		return nil, err
	}
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	secret := base64.RawURLEncoding.EncodeToString(secretBytes)
	rec, err := json.Marshal(secretRecord{Salt: salt, Hash: hashSecret(secret, salt)})
	if err != nil {
		return nil, err
	}
	in := proto.CloneOf(req.GetClient())
	in.Name = clients.Name(id)
	in.State = directoryv1.Client_STATE_ACTIVE
	in.LockedUntil = nil
	out, err := clients.StandardCreate(ctx, s.store, c, req.GetRequestId(), in, s.clock.Now(), func(tx store.Tx, cl *directoryv1.Client) error {
		if _, err := existing(tx, "client.facility", cl.GetFacility()); err != nil {
			return err
		}
		return tx.Create(secretKey(clients.ID(cl.GetName())), rec)
	})
	if err != nil {
		return nil, err
	}
	resp := &directoryv1.CreateClientResponse{Client: out, ClientId: clientID(c.Community, clients.ID(out.GetName()))}
	// A retry with the same request ID returns the client made the first
	// time; the secret of this call was never stored, so it is not shown.
	if clients.ID(out.GetName()) == id {
		resp.ClientSecret = secret
	}
	return resp, nil
}

func clientID(community, id string) string { return id + "@" + community }

// GetClient returns one client of the community.
func (s *Service) GetClient(ctx context.Context, req *directoryv1.GetClientRequest) (*directoryv1.GetClientResponse, error) {
	_, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	cl, err := clients.Load(ctx, s.store, p, req.GetName())
	if err != nil {
		return nil, err
	}
	return &directoryv1.GetClientResponse{Client: cl}, nil
}

// ListClients lists the community's clients.
func (s *Service) ListClients(ctx context.Context, req *directoryv1.ListClientsRequest) (*directoryv1.ListClientsResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	list, next, err := clients.StandardList(ctx, s.store, c, req.GetPageToken(), req.GetPageSize(), "", func(*directoryv1.Client) bool { return true })
	if err != nil {
		return nil, err
	}
	return &directoryv1.ListClientsResponse{Clients: list, NextPageToken: next}, nil
}

// RevokeClient revokes a client and every token it holds. The revocation
// is written first, in the system partition the services poll, so a
// failure after it leaves the client's tokens refused, never accepted.
func (s *Service) RevokeClient(ctx context.Context, req *directoryv1.RevokeClientRequest) (*directoryv1.RevokeClientResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := clients.Load(ctx, s.store, p, req.GetName()); err != nil {
		return nil, err
	}
	now := s.clock.Now()
	id := clients.ID(req.GetName())
	rev := &directoryv1.Revocation{
		Community:  c.Community,
		ClientId:   clientID(c.Community, id),
		RevokeTime: timestamppb.New(now),
		ExpireTime: timestamppb.New(now.Add(maxTokenLife)),
	}
	if err := s.writeRevocation(ctx, "client/"+rev.GetClientId(), rev); err != nil {
		return nil, err
	}
	var out *directoryv1.Client
	err = s.store.Txn(ctx, p, func(tx store.Tx) error {
		cl, version, err := clients.Get(tx, req.GetName())
		if err != nil {
			return err
		}
		cl.State = directoryv1.Client_STATE_REVOKED
		resource.Stamp(cl, now, false)
		if err := clients.Update(tx, cl, version); err != nil {
			return err
		}
		out = cl
		return events.Append(tx, c, now, clients.Change("client.revoked", cl, version+1))
	})
	if err != nil {
		return nil, err
	}
	return &directoryv1.RevokeClientResponse{Client: out}, nil
}

// maxTokenLife bounds the life of any token a revocation must outlast: the
// longest `mcc token -ttl` allows.
const maxTokenLife = 30 * 24 * time.Hour

// invalidClient is the one answer to every credential failure, so a caller
// cannot tell an unknown client from a wrong secret or a revoked client.
func invalidClient() error {
	return fmt.Errorf("%w: invalid client credentials", apierr.ErrUnauthenticated)
}

// ReasonClientLocked is the ErrorInfo reason of a locked client.
const ReasonClientLocked = "CLIENT_LOCKED"

// IssueToken runs the client-credentials grant.
func (s *Service) IssueToken(ctx context.Context, req *directoryv1.IssueTokenRequest) (*directoryv1.IssueTokenResponse, error) {
	if s.keys == nil {
		return nil, apierr.Condition("CLIENTS_DISABLED", "this directory does not issue client tokens")
	}
	id, community, _ := strings.Cut(req.GetClientId(), "@")
	p := store.Partition(community)
	if p.Validate() != nil {
		return nil, invalidClient()
	}
	now := s.clock.Now()
	raw, err := s.store.Get(ctx, p, secretKey(id))
	if errors.Is(err, store.ErrNotFound) {
		// Spend the same work as a real check, so the time taken does not
		// tell an unknown client from a known one.
		hashSecret(req.GetClientSecret(), make([]byte, 16))
		return nil, invalidClient()
	}
	if err != nil {
		return nil, err
	}
	var sec secretRecord
	if err := json.Unmarshal(raw.Value, &sec); err != nil {
		return nil, fmt.Errorf("decode client secret: %w", err)
	}
	ok := subtle.ConstantTimeCompare(hashSecret(req.GetClientSecret(), sec.Salt), sec.Hash) == 1
	var cl *directoryv1.Client
	var locked time.Time
	err = s.store.Txn(ctx, p, func(tx store.Tx) error {
		locked = time.Time{}
		rec, err := tx.Get(secretKey(id))
		if err != nil {
			return err
		}
		var cur secretRecord
		if err := json.Unmarshal(rec.Value, &cur); err != nil {
			return err
		}
		if now.Before(cur.Locked) {
			locked = cur.Locked
			return nil
		}
		c, _, err := clients.Get(tx, clients.Name(id))
		if err != nil {
			return err
		}
		cl = c
		switch {
		case ok && cur.Failures == 0:
			return nil
		case ok:
			cur.Failures, cur.Locked = 0, time.Time{}
		default:
			cur.Failures++
			if cur.Failures >= s.clientCfg.LockAfter {
				cur.Failures, cur.Locked = 0, now.Add(s.clientCfg.LockFor)
			}
		}
		data, err := json.Marshal(cur)
		if err != nil {
			return err
		}
		return tx.Update(secretKey(id), data, rec.Version)
	})
	if err != nil {
		return nil, err
	}
	if !locked.IsZero() {
		return nil, &apierr.ConditionError{
			Reason:   ReasonClientLocked,
			Message:  "too many wrong secrets: the client is locked until " + locked.UTC().Format(time.RFC3339),
			Metadata: map[string]string{"retry_after_seconds": fmt.Sprint(int(locked.Sub(now).Seconds()) + 1)},
		}
	}
	if !ok || cl.GetState() != directoryv1.Client_STATE_ACTIVE {
		return nil, invalidClient()
	}
	scopes, err := narrow(cl.GetScopes(), strings.Fields(req.GetScope()))
	if err != nil {
		return nil, err
	}
	tok, err := s.keys.Issue(auth.Caller{
		Subject:   "clients/" + id,
		Community: community,
		Facility:  cl.GetFacility(),
		Roles:     cl.GetRoles(),
		ClientID:  req.GetClientId(),
		Scopes:    scopes,
	}, s.clientCfg.TokenTTL)
	if err != nil {
		return nil, err
	}
	return &directoryv1.IssueTokenResponse{
		AccessToken: tok,
		TokenType:   "Bearer",
		ExpiresIn:   int64(s.clientCfg.TokenTTL.Seconds()),
		Scope:       strings.Join(scopes, " "),
	}, nil
}

// narrow returns the scopes asked for, which must all be the client's (or
// all of them when none is asked for).
func narrow(granted, asked []string) ([]string, error) {
	if len(asked) == 0 {
		return granted, nil
	}
	for _, a := range asked {
		if !slices.Contains(granted, a) && !slices.Contains(granted, "*") {
			return nil, apierr.Invalid("scope", "%q is not one of the client's scopes", a)
		}
	}
	return asked, nil
}

// RevokeToken revokes one token (RFC 7009). An invalid or foreign token is
// not an error: the answer is the same, so it tells nothing.
func (s *Service) RevokeToken(ctx context.Context, req *directoryv1.RevokeTokenRequest) (*directoryv1.RevokeTokenResponse, error) {
	c, _, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if s.keys == nil {
		return &directoryv1.RevokeTokenResponse{}, nil
	}
	t, err := s.keys.Parse(req.GetToken())
	if err != nil || t.TokenID == "" || t.Community != c.Community {
		return &directoryv1.RevokeTokenResponse{}, nil
	}
	mayRevoke := (t.ClientID != "" && t.ClientID == c.ClientID) || t.TokenID == c.TokenID || c.SeesCommunity()
	if !mayRevoke {
		return &directoryv1.RevokeTokenResponse{}, nil
	}
	rev := &directoryv1.Revocation{
		Community:  t.Community,
		TokenId:    t.TokenID,
		RevokeTime: timestamppb.New(s.clock.Now()),
		ExpireTime: timestamppb.New(s.clock.Now().Add(maxTokenLife)),
	}
	if err := s.writeRevocation(ctx, "token/"+t.TokenID, rev); err != nil {
		return nil, err
	}
	return &directoryv1.RevokeTokenResponse{}, nil
}

func (s *Service) writeRevocation(ctx context.Context, key string, rev *directoryv1.Revocation) error {
	data, err := proto.Marshal(rev)
	if err != nil {
		return err
	}
	return s.store.Txn(ctx, SystemPartition, func(tx store.Tx) error {
		if _, err := tx.Get("rev/" + key); err == nil {
			return nil
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return tx.Put("rev/"+key, data)
	})
}

// ListRevocations lists the revocations still in force.
func (s *Service) ListRevocations(ctx context.Context, req *directoryv1.ListRevocationsRequest) (*directoryv1.ListRevocationsResponse, error) {
	const filter = "revocations"
	after, err := paging.Decode(req.GetPageToken(), filter)
	if err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	if size <= 0 {
		size = 1000
	}
	now := s.clock.Now()
	resp := &directoryv1.ListRevocationsResponse{}
	last, err := paging.Scan(ctx, s.store, SystemPartition, "rev/", after, size, func(rec store.Record) (bool, error) {
		rev := &directoryv1.Revocation{}
		if err := proto.Unmarshal(rec.Value, rev); err != nil {
			return false, err
		}
		if rev.GetExpireTime().AsTime().Before(now) {
			return false, nil
		}
		resp.Revocations = append(resp.Revocations, rev)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	if last != "" {
		resp.NextPageToken = paging.Encode(last, filter)
	}
	return resp, nil
}
