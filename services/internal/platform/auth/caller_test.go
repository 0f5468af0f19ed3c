package auth_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/store"
)

// TestRequire: a handler gets the caller the interceptor put into the
// context, and UNAUTHENTICATED when there is none.
func TestRequire(t *testing.T) {
	want := auth.Caller{Subject: "dr-li", Community: "demo", Facility: "facilities/dls"}
	got, err := auth.Require(auth.WithCaller(context.Background(), want))
	if err != nil || got.Subject != want.Subject || got.Facility != want.Facility {
		t.Errorf("Require = %+v, %v; want %+v", got, err, want)
	}
	_, err = auth.Require(context.Background())
	if st, _ := apierr.Status(err); st.Code() != codes.Unauthenticated {
		t.Errorf("Require without a caller: %v, want UNAUTHENTICATED", err)
	}
}

// TestCallerPartition: a caller's objects are in its community's partition.
func TestCallerPartition(t *testing.T) {
	if got := (auth.Caller{Community: "demo", Facility: "facilities/dls"}).Partition(); got != store.Partition("demo") {
		t.Errorf("Partition = %q, want demo", got)
	}
}
