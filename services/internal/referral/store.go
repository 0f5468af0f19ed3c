package referral

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	referralv1 "github.com/countymcc/mcc/proto/mcc/referral/v1"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

// The referral keys of a community partition:
//
//	ref/{id}                                the referral
//	fu/{id}/followUps/{nn}                  its follow-up tasks
//	sent/{facility}/{id}                    referrals a facility sent
//	recv/{facility}/{id}                    referrals addressed to a facility
//	work/{facility}/{stage}/{rank}/{id}     a receiver's open referrals, in worklist order
//	fuidx/{facility}/{state}/{due}/{id}/{nn} a township's tasks by state and due time
//
// IDs sort by creation time, so every index lists oldest first within its
// prefix, and statistics read a month as one key range.
const (
	referralPrefix = "ref/"
	followUpPrefix = "fu/"
)

var referrals = resource.Table[*referralv1.Referral]{
	Collection: "referrals",
	Prefix:     referralPrefix,
	New:        func() *referralv1.Referral { return &referralv1.Referral{} },
	Event:      "referral",
	Facilities: func(r *referralv1.Referral) []string {
		return []string{r.GetSendingFacility(), r.GetTargetFacility(), coordinators}
	},
	Snapshot: referralSnapshot,
}

var followUps = resource.Table[*referralv1.FollowUp]{
	Collection: "referrals",
	Prefix:     followUpPrefix,
	New:        func() *referralv1.FollowUp { return &referralv1.FollowUp{} },
	Event:      "follow_up",
	Facilities: func(f *referralv1.FollowUp) []string { return []string{f.GetFacility(), coordinators} },
	Snapshot:   followUpSnapshot,
}

// referralSnapshot is a referral as events carry it: without the free text
// (summaries, plans, notes, reasons, titles) in which a clinician may have
// written the patient's name, and without the referral code, which admits
// the patient. Consumers read those with GetReferral, under its access rules.
func referralSnapshot(r *referralv1.Referral) proto.Message {
	snap := proto.CloneOf(r)
	snap.Reason, snap.ClinicalSummary, snap.DischargeSummary, snap.Outcome = "", "", "", ""
	if snap.CarePlan != nil {
		snap.CarePlan.Summary = ""
		for _, t := range snap.CarePlan.GetTasks() {
			t.Description = ""
		}
	}
	for _, a := range snap.GetAttachments() {
		a.Title = ""
	}
	if snap.Triage != nil {
		snap.Triage.Note, snap.Triage.ReferralCode = "", ""
	}
	for _, ch := range snap.GetTimeline() {
		ch.Reason = ""
	}
	snap.AllowedActions = nil
	return snap
}

// followUpSnapshot is a follow-up task as events carry it, without its free
// text.
func followUpSnapshot(f *referralv1.FollowUp) proto.Message {
	snap := proto.CloneOf(f)
	snap.Description, snap.Outcome = "", ""
	for _, ch := range snap.GetTimeline() {
		ch.Reason = ""
	}
	snap.AllowedActions = nil
	return snap
}

func facilityID(name string) string { return strings.TrimPrefix(name, "facilities/") }

// stageOf is the worklist stage of a referral state; 0 for states that are
// in no worklist.
func stageOf(st state) referralv1.Stage {
	switch st {
	case referralv1.Referral_STATE_PENDING:
		return referralv1.Stage_STAGE_TRIAGE
	case referralv1.Referral_STATE_ACCEPTED, referralv1.Referral_STATE_GREEN_CHANNEL, referralv1.Referral_STATE_SENT:
		return referralv1.Stage_STAGE_ARRIVAL
	case referralv1.Referral_STATE_ARRIVED:
		return referralv1.Stage_STAGE_CARE
	}
	return 0
}

// worklistPrefix is where a facility's worklist of one stage starts.
func worklistPrefix(facility string, stage referralv1.Stage) string {
	return fmt.Sprintf("work/%s/%d/", facilityID(facility), stage)
}

// rank orders a worklist: family-doctor contracted patients first, then
// emergencies, urgent and routine referrals; the ID then orders by age.
func rank(r *referralv1.Referral) string {
	contract := "1"
	if r.GetFamilyDoctorContract() {
		contract = "0"
	}
	return fmt.Sprintf("%s%d", contract, referralv1.Urgency_URGENCY_EMERGENCY-r.GetUrgency())
}

// indexKeys are the index keys a referral has in its current state.
func indexKeys(r *referralv1.Referral) []string {
	if r == nil {
		return nil
	}
	id := referrals.ID(r.GetName())
	keys := []string{
		"sent/" + facilityID(r.GetSendingFacility()) + "/" + id,
		"recv/" + facilityID(r.GetTargetFacility()) + "/" + id,
	}
	if stage := stageOf(r.GetState()); stage != 0 {
		keys = append(keys, worklistPrefix(r.GetTargetFacility(), stage)+rank(r)+"/"+id)
	}
	return keys
}

// reindex moves a referral's index keys from what they were (before, nil
// for a new referral) to what they are now.
func reindex(tx store.Tx, before, after *referralv1.Referral) error {
	return moveKeys(tx, indexKeys(before), indexKeys(after))
}

// followUpIndexKey lists a task under its facility, state and due time.
func followUpIndexKey(f *referralv1.FollowUp) string {
	return fmt.Sprintf("%s%020d/%s", followUpIndexPrefix(f.GetFacility(), f.GetState()), f.GetDueTime().AsTime().UnixNano(), followUps.ID(f.GetName()))
}

func followUpIndexPrefix(facility string, st followUpState) string {
	return fmt.Sprintf("fuidx/%s/%d/", facilityID(facility), st)
}

// moveKeys deletes the keys of old that new lacks and writes those of new
// that old lacks.
func moveKeys(tx store.Tx, old, new []string) error {
	for _, k := range old {
		if !slices.Contains(new, k) {
			if err := tx.Delete(k, 0); err != nil {
				return err
			}
		}
	}
	for _, k := range new {
		if !slices.Contains(old, k) {
			if err := tx.Put(k, nil); err != nil {
				return err
			}
		}
	}
	return nil
}
