package recognition

import (
	"context"
	"fmt"

	recognitionv1 "github.com/countymcc/mcc/proto/mcc/recognition/v1"
	"github.com/countymcc/mcc/services/internal/platform/peer"
	"github.com/countymcc/mcc/services/internal/referral"
)

// Attachments checks a referral's attached results against the registry,
// over gRPC with the caller's own token: the referral service's
// AttachmentChecker.
type Attachments struct {
	peers *peer.Peers
}

var _ referral.AttachmentChecker = Attachments{}

// NewAttachments returns the checker that calls the recognition service
// through peers.
func NewAttachments(peers *peer.Peers) Attachments { return Attachments{peers: peers} }

// CheckResults asks CheckResults about q's results.
func (a Attachments) CheckResults(ctx context.Context, q referral.ResultQuery) ([]referral.ResultCheck, error) {
	conn, err := a.peers.Conn(Name)
	if err != nil {
		return nil, err
	}
	resp, err := recognitionv1.NewRecognitionServiceClient(conn).CheckResults(peer.OnBehalf(ctx), &recognitionv1.CheckResultsRequest{
		Patient: q.Patient, Receiver: q.Receiver, Results: q.Results,
	})
	if err != nil {
		return nil, fmt.Errorf("recognition: %w", err)
	}
	out := make([]referral.ResultCheck, 0, len(resp.GetChecks()))
	for _, ch := range resp.GetChecks() {
		out = append(out, referral.ResultCheck{Result: ch.GetResult(), OfPatient: ch.GetOfPatient(), Recognizable: ch.GetRecognizable(), Note: ch.GetDetail()})
	}
	return out, nil
}
