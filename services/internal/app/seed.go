package app

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
)

// runSeed loads a data set into a running mcc through its gRPC API, so the
// seed goes through the same validation as any client. It can be run again:
// what exists already is left as it is.
func runSeed(ctx context.Context, args []string, env Env) error {
	if len(args) == 0 || args[0] != "demo" {
		return errors.New("usage: mcc seed demo [-addr host:port] [-data-dir dir] [-community id]")
	}
	var dataDir, signingKey, community string
	var cf clientFlags
	fs := newFlagSet("mcc seed demo", env)
	cf.register(fs, "localhost:9090", "gRPC address of the running mcc")
	fs.StringVar(&dataDir, "data-dir", "./data", "data directory holding signing.key")
	fs.StringVar(&signingKey, "auth.signing-key", "", "signing key file (default <data-dir>/signing.key)")
	fs.StringVar(&community, "community", "demo", "medical community ID to load the demo into")
	if err := parse(fs, args[1:], env); err != nil {
		return err
	}
	if signingKey == "" {
		signingKey = filepath.Join(dataDir, "signing.key")
	}
	keys, _, err := auth.LoadKeys(signingKey, false, clock.System{})
	if err != nil {
		return fmt.Errorf("%w (is -data-dir the running mcc's?)", err)
	}
	conn, err := cf.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	s := seeder{dir: directoryv1.NewDirectoryServiceClient(conn), keys: keys, community: community}
	counts, err := s.demo(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "seeded community %q: %d facilities, %d practitioners, %d patients\n",
		community, counts.facilities, counts.practitioners, counts.patients)
	return nil
}

// seeder loads data through the directory API.
type seeder struct {
	dir       directoryv1.DirectoryServiceClient
	keys      *auth.Keys
	community string
}

type seedCounts struct{ facilities, practitioners, patients int }

// as returns ctx carrying a short-lived token for facility and role.
func (s seeder) as(ctx context.Context, facility string, role typev1.Role) (context.Context, error) {
	tok, err := s.keys.Issue(auth.Caller{Subject: "seed", Community: s.community, Facility: facility, Roles: []typev1.Role{role}}, 10*time.Minute)
	if err != nil {
		return nil, err
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok), nil
}

func (s seeder) demo(ctx context.Context) (seedCounts, error) {
	var n seedCounts
	admin, err := s.as(ctx, "facilities/"+demoAdminFacility, typev1.Role_ROLE_ADMIN)
	if err != nil {
		return n, err
	}
	for _, f := range demoFacilities() {
		_, err := s.dir.CreateFacility(admin, &directoryv1.CreateFacilityRequest{FacilityId: f.id, Facility: f.facility()})
		if err := created(err, &n.facilities); err != nil {
			return n, fmt.Errorf("facility %s: %w", f.id, err)
		}
	}
	for _, p := range demoPractitioners() {
		_, err := s.dir.CreatePractitioner(admin, &directoryv1.CreatePractitionerRequest{
			PractitionerId: p.id,
			Practitioner:   &directoryv1.Practitioner{DisplayName: p.name, Facility: "facilities/" + p.facility, Roles: p.roles},
		})
		if err := created(err, &n.practitioners); err != nil {
			return n, fmt.Errorf("practitioner %s: %w", p.id, err)
		}
	}
	for _, p := range demoPatients() {
		clinic, err := s.as(ctx, "facilities/"+p.facility, typev1.Role_ROLE_CLINICIAN)
		if err != nil {
			return n, err
		}
		resp, err := s.dir.RegisterPatient(clinic, &directoryv1.RegisterPatientRequest{
			ResidentId:       directory.WithCheckDigit(p.idFirst17),
			DisplayName:      p.name,
			HealthCardNumber: p.healthCard,
		})
		if err != nil {
			return n, fmt.Errorf("patient %s: %w", p.name, err)
		}
		if resp.GetCreated() {
			n.patients++
		}
	}
	return n, nil
}

// created counts a successful create and accepts AlreadyExists, so the seed
// can run again.
func created(err error, count *int) error {
	switch status.Code(err) {
	case codes.OK:
		*count++
		return nil
	case codes.AlreadyExists:
		return nil
	default:
		return err
	}
}
