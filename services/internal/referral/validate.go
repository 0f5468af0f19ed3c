package referral

import (
	"context"
	"fmt"
	"regexp"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	referralv1 "github.com/countymcc/mcc/proto/mcc/referral/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/peer"
)

// ICD10System is the code system of referral diagnoses.
const ICD10System = "http://hl7.org/fhir/sid/icd-10"

// icd10 is the shape of an ICD-10 code: a letter and two digits (the
// category), optionally a point and up to four characters (the
// subdivision, where China's national clinical version uses `x` as a
// placeholder, as in `I10.x00`), and that version's extension `x` and three
// digits (`I63.900x001`). No ICD-10 table is available to MCC, so only the
// shape is checked: a well-formed code that does not exist passes.
var icd10 = regexp.MustCompile(`^[A-Z][0-9]{2}(\.[0-9A-Zx]{1,4}(x[0-9]{3})?)?$`)

// checkDiagnosis checks an ICD-10 diagnosis on field and sets its system.
func checkDiagnosis(field string, d *typev1.Code, required bool) error {
	if d == nil || d.GetCode() == "" && d.GetDisplay() == "" {
		if required {
			return apierr.Invalid(field, "an ICD-10 code and its text are required")
		}
		return nil
	}
	if !icd10.MatchString(d.GetCode()) {
		return apierr.Invalid(field+".code", "is not an ICD-10 code (for example I63.9 or I63.900x001)")
	}
	if d.GetDisplay() == "" || len(d.GetDisplay()) > 500 {
		return apierr.Invalid(field+".display", "the diagnosis text is required, at most 500 bytes")
	}
	if d.GetSystem() != "" && d.GetSystem() != ICD10System {
		return apierr.Invalid(field+".system", "must be empty or %s", ICD10System)
	}
	d.System = ICD10System
	return nil
}

// attachmentRef is the shape of each kind of attachment reference.
var attachmentRef = map[referralv1.Attachment_Kind]*regexp.Regexp{
	referralv1.Attachment_KIND_RESULT: regexp.MustCompile(`^results/[A-Za-z0-9-]{1,64}$`),
	referralv1.Attachment_KIND_REPORT: regexp.MustCompile(`^(lab|imaging|ecg|pathology)/reports/[A-Za-z0-9-]{1,64}$`),
}

// checkAttachmentRefs checks the kind and reference format of each
// attachment, and that none is attached twice.
func checkAttachmentRefs(as []*referralv1.Attachment) error {
	seen := map[string]bool{}
	for i, a := range as {
		field := fmt.Sprintf("referral.attachments[%d]", i)
		pattern, ok := attachmentRef[a.GetKind()]
		if !ok {
			return apierr.Invalid(field+".kind", "must be KIND_RESULT or KIND_REPORT")
		}
		if !pattern.MatchString(a.GetRef()) {
			return apierr.Invalid(field+".ref", "a %s reference looks like %s", a.GetKind(), pattern)
		}
		if seen[a.GetRef()] {
			return apierr.Invalid(field+".ref", "is attached twice")
		}
		seen[a.GetRef()] = true
		a.Recognition, a.RecognitionNote = 0, ""
	}
	return nil
}

// defaultDutyDepartment is notified of a green-channel referral that names
// no department.
const defaultDutyDepartment = "急诊科"

// checkShape checks what a new referral must carry for its direction and
// channel, beyond the request's protovalidate rules.
func checkShape(r *referralv1.Referral) error {
	down := r.GetDirection() == referralv1.Direction_DIRECTION_DOWN
	switch {
	case r.GetGreenChannel() && down:
		return apierr.Invalid("referral.green_channel", "the green channel is for up-referrals")
	case r.GetGreenChannel() && r.GetUrgency() != referralv1.Urgency_URGENCY_EMERGENCY:
		return apierr.Invalid("referral.urgency", "the green channel is for emergencies")
	}
	if err := checkDiagnosis("referral.diagnosis", r.GetDiagnosis(), !down && !r.GetGreenChannel()); err != nil {
		return err
	}
	if err := checkAttachmentRefs(r.GetAttachments()); err != nil {
		return err
	}
	if down {
		switch {
		case r.GetDischargeSummary() == "":
			return apierr.Invalid("referral.discharge_summary", "a down-referral carries the discharge summary")
		case r.GetCarePlan().GetKind() == 0:
			return apierr.Invalid("referral.care_plan.kind", "a down-referral carries a rehabilitation or chronic-disease plan")
		case r.GetReceivingPractitioner() == "":
			return apierr.Invalid("referral.receiving_practitioner", "a down-referral names the receiving doctor")
		}
		return nil
	}
	switch {
	case r.GetDischargeSummary() != "" || r.GetCarePlan() != nil || r.GetReceivingPractitioner() != "":
		return apierr.Invalid("referral.direction", "discharge summary, care plan and receiving practitioner are for down-referrals")
	case r.GetGreenChannel():
		if r.GetTargetDepartment() == "" {
			r.TargetDepartment = defaultDutyDepartment
		}
	case r.GetTargetDepartment() == "":
		return apierr.Invalid("referral.target_department", "an up-referral names the department")
	case r.GetClinicalSummary() == "":
		return apierr.Invalid("referral.clinical_summary", "an up-referral carries a clinical summary")
	}
	return nil
}

// checkParties checks with the directory, before any store transaction,
// that the target facility is an active member of the caller's community
// at a sensible level, that the patient is one of the caller's facility,
// and that a down-referral's receiving doctor works at the target.
func (s *Service) checkParties(ctx context.Context, c auth.Caller, r *referralv1.Referral) error {
	conn, err := s.peers.Conn(directory.Name)
	if err != nil {
		return err
	}
	dir := directoryv1.NewDirectoryServiceClient(conn)
	asService, err := s.peers.AsService(ctx, c.Community)
	if err != nil {
		return err
	}
	from, err := dir.GetFacility(asService, &directoryv1.GetFacilityRequest{Name: c.Facility})
	if status.Code(err) == codes.NotFound {
		return apierr.Condition(ReasonUnknownSending, "your facility is not in the community directory")
	}
	if err != nil {
		return fmt.Errorf("directory: %w", err)
	}
	to, err := dir.GetFacility(asService, &directoryv1.GetFacilityRequest{Name: r.GetTargetFacility()})
	if status.Code(err) == codes.NotFound {
		return apierr.Invalid("referral.target_facility", "is not a facility of your community")
	}
	if err != nil {
		return fmt.Errorf("directory: %w", err)
	}
	if !to.GetFacility().GetActive() {
		return apierr.Invalid("referral.target_facility", "has left the community")
	}
	fromTier, toTier := directory.Tier(from.GetFacility().GetLevel()), directory.Tier(to.GetFacility().GetLevel())
	if r.GetDirection() == referralv1.Direction_DIRECTION_UP && toTier <= fromTier {
		return apierr.Invalid("referral.target_facility", "an up-referral goes to a higher level than %s", from.GetFacility().GetLevel())
	}
	if r.GetDirection() == referralv1.Direction_DIRECTION_DOWN && toTier >= fromTier {
		return apierr.Invalid("referral.target_facility", "a down-referral goes to a lower level than %s", from.GetFacility().GetLevel())
	}
	// The patient is read with the caller's own rights: a facility refers
	// only patients it has registered or matched.
	if _, err := dir.GetPatient(peer.OnBehalf(ctx), &directoryv1.GetPatientRequest{Name: r.GetPatient()}); status.Code(err) == codes.NotFound {
		return apierr.Invalid("referral.patient", "is not a patient of your facility")
	} else if err != nil {
		return fmt.Errorf("directory: %w", err)
	}
	if r.GetDirection() != referralv1.Direction_DIRECTION_DOWN {
		return nil
	}
	p, err := dir.GetPractitioner(asService, &directoryv1.GetPractitionerRequest{Name: r.GetReceivingPractitioner()})
	if status.Code(err) == codes.NotFound || err == nil && (p.GetPractitioner().GetFacility() != r.GetTargetFacility() || !p.GetPractitioner().GetActive()) {
		return apierr.Invalid("referral.receiving_practitioner", "is not an active practitioner of the target facility")
	}
	if err != nil {
		return fmt.Errorf("directory: %w", err)
	}
	return nil
}
