package directory

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/peer"
)

// Errors of Lookup, for the caller to turn into its own field or reason.
var (
	// ErrNoPatient: the patient is not in the community's patient index.
	ErrNoPatient = errors.New("not a patient of the community's patient index")
	// ErrFacilityUnknown: the caller's facility is not in the directory.
	ErrFacilityUnknown = errors.New("the caller's facility is not in the directory")
	// ErrNoCenter: the directory assigns no center of the kind to the
	// caller's facility.
	ErrNoCenter = errors.New("the directory assigns no such center to the caller's facility")
)

// LookupTTL is how long Lookup reuses the directory's answers. A patient
// is never removed from the index and a facility's centers change rarely;
// a change is seen by every service within this time.
const LookupTTL = 30 * time.Second

// maxLookups bounds each of Lookup's caches; a full cache is emptied.
const maxLookups = 100000

// Lookup asks the directory, as the calling service, the two questions a
// center asks of every new request: is its patient in the community's
// index, and which facility is the caller's center of a kind. It keeps the
// answers for LookupTTL, so that a busy center does not make two more
// authenticated, audited calls for every request it takes.
type Lookup struct {
	peers *peer.Peers

	mu         sync.Mutex
	patients   map[string]lookedUp[*directoryv1.Patient]
	facilities map[string]lookedUp[*directoryv1.Facility]
}

type lookedUp[T any] struct {
	value T
	until time.Time
}

// NewLookup returns a Lookup calling the directory through peers.
func NewLookup(peers *peer.Peers) *Lookup {
	return &Lookup{peers: peers, patients: map[string]lookedUp[*directoryv1.Patient]{}, facilities: map[string]lookedUp[*directoryv1.Facility]{}}
}

// Patient returns the patient named name in the caller's community, or
// ErrNoPatient.
func (l *Lookup) Patient(ctx context.Context, c auth.Caller, name string) (*directoryv1.Patient, error) {
	return lookup(l, l.patients, ctx, c.Community, name, func(dir directoryv1.DirectoryServiceClient, ctx context.Context) (*directoryv1.Patient, error) {
		resp, err := dir.GetPatient(ctx, &directoryv1.GetPatientRequest{Name: name})
		if status.Code(err) == codes.NotFound {
			return nil, ErrNoPatient
		}
		return resp.GetPatient(), err
	})
}

// Facility returns the facility named name in community, or
// ErrFacilityUnknown.
func (l *Lookup) Facility(ctx context.Context, community, name string) (*directoryv1.Facility, error) {
	return lookup(l, l.facilities, ctx, community, name, func(dir directoryv1.DirectoryServiceClient, ctx context.Context) (*directoryv1.Facility, error) {
		resp, err := dir.GetFacility(ctx, &directoryv1.GetFacilityRequest{Name: name})
		if status.Code(err) == codes.NotFound {
			return nil, ErrFacilityUnknown
		}
		return resp.GetFacility(), err
	})
}

// Center returns the facility that hosts the center of kind for the
// caller's facility, or ErrFacilityUnknown or ErrNoCenter.
func (l *Lookup) Center(ctx context.Context, c auth.Caller, kind typev1.Center) (string, error) {
	f, err := l.Facility(ctx, c.Community, c.Facility)
	if err != nil {
		return "", err
	}
	for _, a := range f.GetCenters() {
		if a.GetCenter() == kind {
			return a.GetFacility(), nil
		}
	}
	return "", ErrNoCenter
}

// lookup returns the cached answer about name in community, or asks the
// directory as the service in that community and keeps a found answer.
func lookup[T any](l *Lookup, cache map[string]lookedUp[T], ctx context.Context, community, name string, ask func(directoryv1.DirectoryServiceClient, context.Context) (T, error)) (T, error) {
	var zero T
	key := community + "|" + name
	now := time.Now()
	l.mu.Lock()
	hit, ok := cache[key]
	l.mu.Unlock()
	if ok && now.Before(hit.until) {
		return hit.value, nil
	}
	conn, err := l.peers.Conn(Name)
	if err != nil {
		return zero, err
	}
	sctx, err := l.peers.AsService(ctx, community)
	if err != nil {
		return zero, err
	}
	v, err := ask(directoryv1.NewDirectoryServiceClient(conn), sctx)
	if errors.Is(err, ErrNoPatient) || errors.Is(err, ErrFacilityUnknown) {
		return zero, err
	}
	if err != nil {
		return zero, fmt.Errorf("directory: %w", err)
	}
	l.mu.Lock()
	if len(cache) >= maxLookups {
		clear(cache)
	}
	cache[key] = lookedUp[T]{value: v, until: now.Add(LookupTTL)}
	l.mu.Unlock()
	return v, nil
}
