package sterilization

import (
	"context"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/peer"
)

// The directory is read before a store transaction, never inside one: a
// Txn function may run more than once and must not wait on the network.

// directoryClient returns a client of the directory and a context that
// calls it as this service, in the caller's community.
func (s *Service) directoryClient(ctx context.Context, c auth.Caller) (directoryv1.DirectoryServiceClient, context.Context, error) {
	conn, err := s.peers.Conn(directory.Name)
	if err != nil {
		return nil, nil, err
	}
	svc, err := s.peers.AsService(ctx, c.Community)
	if err != nil {
		return nil, nil, err
	}
	return directoryv1.NewDirectoryServiceClient(conn), svc, nil
}

// cssdOf returns the facility that hosts the sterilization center serving
// facility: the one its directory record names, or the facility itself when
// it hosts the center for others (a county hospital's own departments).
func (s *Service) cssdOf(ctx context.Context, c auth.Caller, facility string) (string, error) {
	dir, svc, err := s.directoryClient(ctx, c)
	if err != nil {
		return "", err
	}
	resp, err := dir.GetFacility(svc, &directoryv1.GetFacilityRequest{Name: facility})
	if status.Code(err) == codes.NotFound {
		return "", apierr.Condition(ReasonNoCenter, "%s is not in the community directory", facility)
	}
	if err != nil {
		return "", err
	}
	for _, a := range resp.GetFacility().GetCenters() {
		if a.GetCenter() == typev1.Center_CENTER_STERILIZATION {
			return a.GetFacility(), nil
		}
	}
	hosts, err := s.hostsCenter(ctx, c, facility)
	if err != nil {
		return "", err
	}
	if !hosts {
		return "", apierr.Condition(ReasonNoCenter, "no sterilization center serves %s", facility)
	}
	return facility, nil
}

// hostsCenter reports whether some facility of the community names facility
// as the host of its sterilization center.
func (s *Service) hostsCenter(ctx context.Context, c auth.Caller, facility string) (bool, error) {
	dir, svc, err := s.directoryClient(ctx, c)
	if err != nil {
		return false, err
	}
	token := ""
	for {
		resp, err := dir.ListFacilities(svc, &directoryv1.ListFacilitiesRequest{PageSize: 1000, PageToken: token})
		if err != nil {
			return false, err
		}
		for _, f := range resp.GetFacilities() {
			for _, a := range f.GetCenters() {
				if a.GetCenter() == typev1.Center_CENTER_STERILIZATION && a.GetFacility() == facility {
					return true, nil
				}
			}
		}
		if token = resp.GetNextPageToken(); token == "" {
			return false, nil
		}
	}
}

// checkDestination checks that a dispatch destination is served by the
// caller's CSSD.
func (s *Service) checkDestination(ctx context.Context, c auth.Caller, destination string) error {
	cssd, err := s.cssdOf(ctx, c, destination)
	if apierr.Code(err) == codes.FailedPrecondition || (err == nil && cssd != c.Facility) {
		return apierr.Invalid("destination", "%s is not served by this sterilization center", destination)
	}
	return err
}

// checkPatient checks that the caller's facility knows the patient. It asks
// the directory on the caller's behalf, so a clinic can only name patients
// it has registered or matched.
func (s *Service) checkPatient(ctx context.Context, patient string) error {
	conn, err := s.peers.Conn(directory.Name)
	if err != nil {
		return err
	}
	_, err = directoryv1.NewDirectoryServiceClient(conn).GetPatient(peer.OnBehalf(ctx), &directoryv1.GetPatientRequest{Name: patient})
	if status.Code(err) == codes.NotFound {
		return apierr.Invalid("patient", "%s is not a patient known to your facility", patient)
	}
	return err
}

// checkClinician checks that the clinician is an active practitioner of
// the caller's facility.
func (s *Service) checkClinician(ctx context.Context, c auth.Caller, clinician string) error {
	dir, svc, err := s.directoryClient(ctx, c)
	if err != nil {
		return err
	}
	resp, err := dir.GetPractitioner(svc, &directoryv1.GetPractitionerRequest{Name: clinician})
	if status.Code(err) == codes.NotFound {
		return apierr.Invalid("clinician", "%s does not exist", clinician)
	}
	if err != nil {
		return err
	}
	if p := resp.GetPractitioner(); p.GetFacility() != c.Facility || !p.GetActive() {
		return apierr.Invalid("clinician", "%s is not an active practitioner of %s", clinician, c.Facility)
	}
	return nil
}

// checkCenter checks that the caller's facility hosts a sterilization
// center, before it registers a sterilizer.
func (s *Service) checkCenter(ctx context.Context, c auth.Caller) error {
	hosts, err := s.hostsCenter(ctx, c, c.Facility)
	if err != nil {
		return err
	}
	if !hosts {
		return apierr.Condition(ReasonNotCenter, "%s hosts no sterilization center in the directory", c.Facility)
	}
	return nil
}

// facilityID is the ID part of a facility name, as used in keys.
func facilityID(name string) string { return strings.TrimPrefix(name, "facilities/") }
