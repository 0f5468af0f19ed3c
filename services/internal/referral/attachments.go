package referral

import (
	"context"
	"fmt"

	referralv1 "github.com/countymcc/mcc/proto/mcc/referral/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
)

// AttachmentChecker checks the results attached to a referral against the
// recognition registry (结果互认). The recognition service implements it
// over gRPC once it exists; until then Deps.Attachments is nil and attached
// results are stored as RECOGNITION_UNCHECKED, with only their reference
// format checked.
type AttachmentChecker interface {
	// CheckResults answers, for each result of q, whether it exists and
	// belongs to q.Patient, and whether q.Receiver may recognize it. It
	// answers for every result asked, in any order. ctx carries the
	// caller's token (peer.OnBehalf works on it). An error fails the
	// referral's creation: attachments are never accepted unchecked while
	// a checker is configured.
	CheckResults(ctx context.Context, q ResultQuery) ([]ResultCheck, error)
}

// ResultQuery asks about the results attached to one referral.
type ResultQuery struct {
	// Community is the caller's community.
	Community string
	// Patient is the referral's patient, `patients/{id}`.
	Patient string
	// Receiver is the facility the referral goes to, `facilities/{id}`.
	Receiver string
	// Results are result names, `results/{id}`.
	Results []string
}

// ResultCheck is the answer about one result.
type ResultCheck struct {
	// Result is the result name asked about.
	Result string
	// OfPatient is true when the result exists and belongs to the
	// patient. A result of another patient and one that does not exist get
	// the same answer, so a referral never reveals another patient's
	// results.
	OfPatient bool
	// Recognizable is true when the receiver may use the result instead of
	// repeating the test.
	Recognizable bool
	// Note says why a result is not recognizable (expired, not in the
	// catalog, QC suspended, ...).
	Note string
}

// checkAttachments asks the checker about the attached results, refuses
// those that are not the patient's, and records for the others whether the
// receiver can recognize them. Reports are references to a center's report
// and are not checked here.
func (s *Service) checkAttachments(ctx context.Context, c auth.Caller, r *referralv1.Referral) error {
	q := ResultQuery{Community: c.Community, Patient: r.GetPatient(), Receiver: r.GetTargetFacility()}
	index := map[string]int{}
	for i, a := range r.GetAttachments() {
		if a.GetKind() == referralv1.Attachment_KIND_RESULT {
			q.Results = append(q.Results, a.GetRef())
			index[a.GetRef()] = i
			a.Recognition = referralv1.Attachment_RECOGNITION_UNCHECKED
		}
	}
	if len(q.Results) == 0 || s.attachments == nil {
		return nil
	}
	checks, err := s.attachments.CheckResults(ctx, q)
	if err != nil {
		return fmt.Errorf("checking attached results: %w", err)
	}
	answered := map[string]bool{}
	for _, ch := range checks {
		i, ok := index[ch.Result]
		if !ok {
			continue
		}
		answered[ch.Result] = true
		if !ch.OfPatient {
			return apierr.Invalid(fmt.Sprintf("referral.attachments[%d].ref", i), "is not a result of this patient")
		}
		a := r.GetAttachments()[i]
		a.Recognition, a.RecognitionNote = referralv1.Attachment_RECOGNITION_NOT_RECOGNIZABLE, ch.Note
		if ch.Recognizable {
			a.Recognition, a.RecognitionNote = referralv1.Attachment_RECOGNITION_RECOGNIZABLE, ""
		}
	}
	for _, ref := range q.Results {
		if !answered[ref] {
			return fmt.Errorf("the attachment checker did not answer for an attached result")
		}
	}
	return nil
}
