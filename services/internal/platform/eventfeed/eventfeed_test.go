package eventfeed_test

import (
	"slices"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/reflect/protoregistry"

	_ "github.com/countymcc/mcc/proto/mcc/directory/v1"
	_ "github.com/countymcc/mcc/proto/mcc/lab/v1"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/eventfeed"
	"github.com/countymcc/mcc/services/internal/platform/peer"
)

// TestDiscover: the services with a feed that the process has a connection
// to are found, in name order; those without one, or without a feed, are
// missing.
func TestDiscover(t *testing.T) {
	conn, err := grpc.NewClient("passthrough:///nowhere", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	peers := peer.New("test", nil, clock.System{}, map[string]*grpc.ClientConn{"lab": conn, "directory": conn})
	found, missing := eventfeed.Discover(protoregistry.GlobalFiles, peers, "lab", "directory", "imaging", "nosuch")
	var names []string
	for _, s := range found {
		names = append(names, s.Name)
	}
	if !slices.Equal(names, []string{"directory", "lab"}) || !slices.Equal(missing, []string{"imaging", "nosuch"}) {
		t.Errorf("found %v, missing %v", names, missing)
	}
	if _, err := eventfeed.New(protoregistry.GlobalFiles, "nosuch", conn); err == nil {
		t.Error("a source of a service without a feed")
	}
	if s, err := eventfeed.New(protoregistry.GlobalFiles, "lab", conn); err != nil || s.Name != "lab" {
		t.Errorf("New(lab) = %v, %v", s, err)
	}
}
