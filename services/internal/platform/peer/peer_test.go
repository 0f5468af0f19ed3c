package peer_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/peer"
	"github.com/countymcc/mcc/services/internal/platform/pii"
	"github.com/countymcc/mcc/services/internal/platform/servertest"
	"github.com/countymcc/mcc/services/internal/store/bolt"
)

func TestPeers(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "d.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	prot, err := pii.LoadProtector(filepath.Join(t.TempDir(), "pii.key"), true)
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewManual(time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC))
	dir := directory.New(st, prot, clk)
	env := servertest.Start(t, clk, directory.Policy(), func(s *grpc.Server) { dir.Register(s) })
	peers := peer.New("lab", env.Keys, clk, map[string]*grpc.ClientConn{directory.Name: env.Conn})

	clinic := env.As(t, "urad", "dls", typev1.Role_ROLE_CLINICIAN)
	client := directoryv1.NewDirectoryServiceClient(env.Conn)
	reg, err := client.RegisterPatient(clinic, &directoryv1.RegisterPatientRequest{ResidentId: directory.WithCheckDigit("15082419580314201"), DisplayName: "巴特尔"})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := peers.Conn(directory.Name)
	if err != nil {
		t.Fatal(err)
	}
	peerClient := directoryv1.NewDirectoryServiceClient(conn)

	// As the service, the patient of any facility of the community is found.
	svc, err := peers.AsService(context.Background(), "urad")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := peerClient.GetPatient(svc, &directoryv1.GetPatientRequest{Name: reg.GetPatient().GetName()}); err != nil {
		t.Errorf("as service: %v", err)
	}
	// The service token lasts across calls, and is renewed when the clock
	// nears its expiry.
	clk.Advance(10 * time.Minute)
	svc, _ = peers.AsService(context.Background(), "urad")
	if _, err := peerClient.GetPatient(svc, &directoryv1.GetPatientRequest{Name: reg.GetPatient().GetName()}); err != nil {
		t.Errorf("as service after 10 minutes: %v", err)
	}
	// On behalf of a user of another facility, the user's own rights apply.
	other := env.As(t, "urad", "wjh", typev1.Role_ROLE_CLINICIAN)
	md, _ := metadata.FromOutgoingContext(other)
	incoming := metadata.NewIncomingContext(context.Background(), md)
	_, err = peerClient.GetPatient(peer.OnBehalf(incoming), &directoryv1.GetPatientRequest{Name: reg.GetPatient().GetName()})
	servertest.WantCode(t, err, codes.NotFound)

	if _, err := peers.Conn("nowhere"); err == nil {
		t.Error("a connection to an unknown service")
	}
}
