package sterilization

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	sterilizationv1 "github.com/countymcc/mcc/proto/mcc/sterilization/v1"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/paging"
	"github.com/countymcc/mcc/services/internal/store"
)

// patientLink indexes one use of a package on a patient. It carries the
// facilities that may see it, so a listing filters without reading the
// package.
type patientLink struct {
	Package  string `json:"package"`
	Cycle    int32  `json:"cycle"`
	Facility string `json:"facility"`
	Cssd     string `json:"cssd"`
}

func patientPrefix(patient string) string {
	return "patpkg/" + strings.TrimPrefix(patient, "patients/") + "/"
}

// putPatientLink indexes p's use under its patient, in time order.
func putPatientLink(tx store.Tx, p *sterilizationv1.Package) error {
	u := p.GetUse()
	data, err := json.Marshal(patientLink{Package: p.GetName(), Cycle: p.GetCycle(), Facility: u.GetFacility(), Cssd: p.GetCssd()})
	if err != nil {
		return err
	}
	key := fmt.Sprintf("%s%020d-%s-%06d", patientPrefix(u.GetPatient()), u.GetTime().AsTime().UnixNano(), p.GetBarcode(), p.GetCycle())
	return tx.Put(key, data)
}

// cycleOf reads one cycle of a package: the current one from the package,
// an ended one from its own key.
func (s *Service) cycleOf(ctx context.Context, p store.Partition, name string, cycle int32) (*sterilizationv1.Package, error) {
	cur, err := packages.Load(ctx, s.store, p, name)
	if err != nil || cur.GetCycle() == cycle {
		return cur, err
	}
	rec, err := s.store.Get(ctx, p, cycleKey(packageID(name), cycle))
	if err != nil {
		return nil, err
	}
	return decodeCycle(rec)
}

func decodeCycle(rec store.Record) (*sterilizationv1.Package, error) {
	out := &sterilizationv1.Package{}
	if err := proto.Unmarshal(rec.Value, out); err != nil {
		return nil, fmt.Errorf("decode %s: %w", rec.Key, err)
	}
	return out, nil
}

// TracePackage returns a package's cycles, oldest first, the current one
// last.
func (s *Service) TracePackage(ctx context.Context, req *sterilizationv1.TracePackageRequest) (*sterilizationv1.TracePackageResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	part := c.Partition()
	cur, err := packages.Load(ctx, s.store, part, req.GetName())
	if err != nil {
		return nil, err
	}
	if !sees(c, cur) {
		return nil, notFound(req.GetName())
	}
	filter := "trace|" + req.GetName()
	cache := newLoadCache()
	resp := &sterilizationv1.TracePackageResponse{}
	resp.NextPageToken, err = s.page(ctx, c, "pcyc/"+cur.GetBarcode()+"/", filter, req.GetPageToken(), req.GetPageSize(), func(rec store.Record) (bool, error) {
		p, err := decodeCycle(rec)
		if err != nil {
			return false, err
		}
		return s.appendView(ctx, c, &resp.Cycles, p, cache)
	})
	if err != nil {
		return nil, err
	}
	switch {
	case resp.GetNextPageToken() != "":
	case len(resp.GetCycles()) < paging.Size(req.GetPageSize()):
		if _, err := s.appendView(ctx, c, &resp.Cycles, cur, cache); err != nil {
			return nil, err
		}
	default:
		// The page is full of ended cycles; the current one comes on the
		// next page, which starts after every ended cycle.
		resp.NextPageToken = paging.Encode(fmt.Sprintf("pcyc/%s/%06d", cur.GetBarcode(), cur.GetCycle()), filter)
	}
	return resp, nil
}

// ListPatientPackages lists the package cycles used on a patient that the
// caller may see: the clinic that used them, their CSSD, administrators.
func (s *Service) ListPatientPackages(ctx context.Context, req *sterilizationv1.ListPatientPackagesRequest) (*sterilizationv1.ListPatientPackagesResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	part := c.Partition()
	filter := "patient|" + req.GetPatient() + "|" + c.Facility
	cache := newLoadCache()
	resp := &sterilizationv1.ListPatientPackagesResponse{}
	resp.NextPageToken, err = s.page(ctx, c, patientPrefix(req.GetPatient()), filter, req.GetPageToken(), req.GetPageSize(), func(rec store.Record) (bool, error) {
		var link patientLink
		if err := json.Unmarshal(rec.Value, &link); err != nil {
			return false, fmt.Errorf("decode %s: %w", rec.Key, err)
		}
		if !c.SeesCommunity() && c.Facility != link.Facility && c.Facility != link.Cssd {
			return false, nil
		}
		p, err := s.cycleOf(ctx, part, link.Package, link.Cycle)
		if err != nil {
			return false, err
		}
		return s.appendView(ctx, c, &resp.Packages, p, cache)
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// ListInventory lists the sterile packages the caller's facility holds,
// optionally only those expiring within a number of days.
func (s *Service) ListInventory(ctx context.Context, req *sterilizationv1.ListInventoryRequest) (*sterilizationv1.ListInventoryResponse, error) {
	c, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	part := c.Partition()
	filter := fmt.Sprintf("inventory|%s|%d", c.Facility, req.GetExpiresWithinDays())
	horizon := s.clock.Now().Add(time.Duration(req.GetExpiresWithinDays()) * 24 * time.Hour)
	cache := newLoadCache()
	resp := &sterilizationv1.ListInventoryResponse{}
	prefix := inventoryKey(c.Facility, "")
	resp.NextPageToken, err = s.page(ctx, c, prefix, filter, req.GetPageToken(), req.GetPageSize(), func(rec store.Record) (bool, error) {
		p, err := packages.Load(ctx, s.store, part, packages.Name(strings.TrimPrefix(rec.Key, prefix)))
		if err != nil {
			return false, err
		}
		if req.GetExpiresWithinDays() > 0 && (p.GetExpireTime() == nil || p.GetExpireTime().AsTime().After(horizon)) {
			return false, nil
		}
		return s.appendView(ctx, c, &resp.Packages, p, cache)
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// appendView appends p, as the caller sees it, to a page.
func (s *Service) appendView(ctx context.Context, c auth.Caller, page *[]*sterilizationv1.Package, p *sterilizationv1.Package, cache loadCache) (bool, error) {
	v, err := s.view(ctx, c, p, cache)
	if err != nil {
		return false, err
	}
	*page = append(*page, v)
	return true, nil
}
