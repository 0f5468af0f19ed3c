package app

import (
	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/directory"
)

// The demo community is modeled on Urad Middle Banner (乌拉特中旗, region
// code 150824) in Bayannur, Inner Mongolia: two banner hospitals run the
// shared centers for the township health centers and village clinics.
// People and ID numbers are invented; the numbers carry valid check digits.

// demoAdminFacility is where the demo administrator works.
const demoAdminFacility = "qrmyy"

type demoFacility struct {
	id, name string
	level    typev1.FacilityLevel
	parent   string
	// centers says which facility hosts each center serving this one; nil
	// for the hosts themselves.
	centers map[typev1.Center]string
}

func (f demoFacility) facility() *directoryv1.Facility {
	out := &directoryv1.Facility{DisplayName: f.name, Level: f.level}
	if f.parent != "" {
		out.Parent = "facilities/" + f.parent
	}
	for c := typev1.Center_CENTER_LAB; c <= typev1.Center_CENTER_STERILIZATION; c++ {
		if host, ok := f.centers[c]; ok {
			out.Centers = append(out.Centers, &directoryv1.CenterAssignment{Center: c, Facility: "facilities/" + host})
		}
	}
	return out
}

// demoCenters: the people's hospital hosts lab, imaging, pathology and CSSD;
// the Mongolian and TCM hospital hosts the ECG center.
var demoCenters = map[typev1.Center]string{
	typev1.Center_CENTER_LAB:           "qrmyy",
	typev1.Center_CENTER_IMAGING:       "qrmyy",
	typev1.Center_CENTER_ECG:           "mzyy",
	typev1.Center_CENTER_PATHOLOGY:     "qrmyy",
	typev1.Center_CENTER_STERILIZATION: "qrmyy",
}

// demoFacilities lists parents before children, as the directory requires.
func demoFacilities() []demoFacility {
	const (
		county    = typev1.FacilityLevel_FACILITY_LEVEL_COUNTY_HOSPITAL
		township  = typev1.FacilityLevel_FACILITY_LEVEL_TOWNSHIP_HEALTH_CENTER
		community = typev1.FacilityLevel_FACILITY_LEVEL_COMMUNITY_HEALTH_CENTER
		village   = typev1.FacilityLevel_FACILITY_LEVEL_VILLAGE_CLINIC
	)
	return []demoFacility{
		{id: "qrmyy", name: "乌拉特中旗人民医院", level: county},
		{id: "mzyy", name: "乌拉特中旗蒙中医医院", level: county},
		{id: "fybjy", name: "乌拉特中旗妇幼保健院", level: county, centers: demoCenters},
		{id: "hlt-sq", name: "海流图镇社区卫生服务中心", level: community, parent: "qrmyy", centers: demoCenters},
		{id: "dls", name: "德岭山中心卫生院", level: township, parent: "qrmyy", centers: demoCenters},
		{id: "wjh", name: "乌加河中心卫生院", level: township, parent: "qrmyy", centers: demoCenters},
		{id: "shh", name: "石哈河镇卫生院", level: township, parent: "qrmyy", centers: demoCenters},
		{id: "bywl", name: "巴音乌兰苏木卫生院", level: township, parent: "qrmyy", centers: demoCenters},
		{id: "xhr", name: "新忽热苏木卫生院", level: township, parent: "qrmyy", centers: demoCenters},
		{id: "dls-wl", name: "德岭山镇乌兰村卫生室", level: village, parent: "dls", centers: demoCenters},
		{id: "wjh-xbl", name: "乌加河镇西补隆村卫生室", level: village, parent: "wjh", centers: demoCenters},
	}
}

type demoPractitioner struct {
	id, name, facility string
	roles              []typev1.Role
}

func demoPractitioners() []demoPractitioner {
	r := func(roles ...typev1.Role) []typev1.Role { return roles }
	return []demoPractitioner{
		{id: "admin-qrmyy", name: "赵信息", facility: "qrmyy", roles: r(typev1.Role_ROLE_ADMIN)},
		{id: "lab-wang", name: "王检验", facility: "qrmyy", roles: r(typev1.Role_ROLE_LAB_TECHNOLOGIST)},
		{id: "lab-liu", name: "刘审核", facility: "qrmyy", roles: r(typev1.Role_ROLE_LAB_TECHNOLOGIST)},
		{id: "rad-sun", name: "孙影像", facility: "qrmyy", roles: r(typev1.Role_ROLE_RADIOLOGIST)},
		{id: "rad-zhou", name: "周主任", facility: "qrmyy", roles: r(typev1.Role_ROLE_RADIOLOGIST)},
		{id: "path-wu", name: "吴病理", facility: "qrmyy", roles: r(typev1.Role_ROLE_PATHOLOGIST)},
		{id: "path-ma", name: "马主任", facility: "qrmyy", roles: r(typev1.Role_ROLE_PATHOLOGIST)},
		{id: "cssd-zheng", name: "郑消毒", facility: "qrmyy", roles: r(typev1.Role_ROLE_CSSD_OPERATOR)},
		{id: "ref-chen", name: "陈协调", facility: "qrmyy", roles: r(typev1.Role_ROLE_REFERRAL_COORDINATOR)},
		{id: "ecg-bao", name: "包心电", facility: "mzyy", roles: r(typev1.Role_ROLE_CARDIOLOGIST)},
		{id: "ecg-gao", name: "高主任", facility: "mzyy", roles: r(typev1.Role_ROLE_CARDIOLOGIST)},
		{id: "doc-dls-han", name: "韩医生", facility: "dls", roles: r(typev1.Role_ROLE_CLINICIAN)},
		{id: "doc-wjh-li", name: "李医生", facility: "wjh", roles: r(typev1.Role_ROLE_CLINICIAN)},
		{id: "doc-dls-wl", name: "乌村医", facility: "dls-wl", roles: r(typev1.Role_ROLE_CLINICIAN)},
		{id: "audit-qrmyy", name: "钱审计", facility: "qrmyy", roles: r(typev1.Role_ROLE_AUDITOR)},
	}
}

type demoPatient struct {
	name, idFirst17, healthCard, facility string
}

func demoPatients() []demoPatient {
	return []demoPatient{
		{name: "巴特尔", idFirst17: "15082419580314201", healthCard: "HC150824001", facility: "dls"},
		{name: "其其格", idFirst17: "15082419670821302", facility: "dls"},
		{name: "王建国", idFirst17: "15082419521107101", healthCard: "HC150824003", facility: "wjh"},
		{name: "李秀英", idFirst17: "15082419750203402", facility: "wjh"},
		{name: "乌云", idFirst17: "15082420120916202", facility: "dls-wl"},
	}
}

// DemoIdentifiers lists what identifies the demo patients directly: names,
// resident ID numbers and health card numbers. Tests check that none of
// them ever reaches a log, a span or an event.
func DemoIdentifiers() []string {
	var out []string
	for _, p := range demoPatients() {
		out = append(out, p.name, directory.WithCheckDigit(p.idFirst17))
		if p.healthCard != "" {
			out = append(out, p.healthCard)
		}
	}
	return out
}
