package recognition

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"google.golang.org/protobuf/proto"

	recognitionv1 "github.com/countymcc/mcc/proto/mcc/recognition/v1"
	"github.com/countymcc/mcc/services/internal/platform/paging"
	"github.com/countymcc/mcc/services/internal/platform/resource"
	"github.com/countymcc/mcc/services/internal/store"
)

// The catalog of a community is copied from the built-in seed (catalog
// version 1) the first time the community uses the service, and from then
// on the stored items are the catalog:
//
//	catalog/version             the current catalog version
//	item/{code}                 the current definition of an item
//	itemrev/{code}/{version}    every definition an item has had
//	rules/version               grows with every change of the catalog or
//	                            of a QC suspension; checks cache the rules
//	                            they read until it moves
const (
	catalogVersionKey = "catalog/version"
	rulesVersionKey   = "rules/version"
)

var items = resource.Table[*recognitionv1.Item]{
	Collection: "items",
	Prefix:     "item/",
	New:        func() *recognitionv1.Item { return &recognitionv1.Item{} },
	Event:      "item",
	Mutable:    []string{"display_name", "center", "recognized", "validity_days", "scope", "min_facility_level", "requires_qc", "price_fen"},
}

func itemRevisionPrefix(code string) string { return "itemrev/" + code + "/" }

func itemRevisionKey(code string, version int64) string {
	return fmt.Sprintf("%s%020d", itemRevisionPrefix(code), version)
}

// ensureCatalog copies the seed into the partition, once.
func (s *Service) ensureCatalog(ctx context.Context, p store.Partition) error {
	if _, err := s.store.Get(ctx, p, catalogVersionKey); err == nil || !isNotFound(err) {
		return err
	}
	return s.store.Txn(ctx, p, func(tx store.Tx) error {
		if _, err := tx.Get(catalogVersionKey); err == nil || !isNotFound(err) {
			return err
		}
		if err := tx.Put(catalogVersionKey, []byte("1")); err != nil {
			return err
		}
		for _, it := range s.seed.items {
			it := proto.CloneOf(it)
			if err := items.Create(tx, it); err != nil {
				return err
			}
			if err := putItemRevision(tx, it); err != nil {
				return err
			}
		}
		return bumpRules(tx)
	})
}

func putItemRevision(tx store.Tx, it *recognitionv1.Item) error {
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(it)
	if err != nil {
		return err
	}
	return tx.Put(itemRevisionKey(it.GetCode().GetCode(), it.GetCatalogVersion()), data)
}

// bumpRules moves the rules version, so every check reads the rules anew.
func bumpRules(tx store.Tx) error {
	v, err := readCounter(tx.Get, rulesVersionKey)
	if err != nil {
		return err
	}
	return tx.Put(rulesVersionKey, []byte(strconv.FormatInt(v+1, 10)))
}

// readCounter reads a decimal counter; a missing one is 0.
func readCounter(get func(string) (store.Record, error), key string) (int64, error) {
	rec, err := get(key)
	if isNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(string(rec.Value), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s %q: %w", key, rec.Value, err)
	}
	return v, nil
}

// nextCatalogVersion gives an item definition the next catalog version,
// keeping it as that version's revision.
func nextCatalogVersion(tx store.Tx, it *recognitionv1.Item) error {
	v, err := readCounter(tx.Get, catalogVersionKey)
	if err != nil {
		return err
	}
	it.CatalogVersion = v + 1
	if err := tx.Put(catalogVersionKey, []byte(strconv.FormatInt(v+1, 10))); err != nil {
		return err
	}
	if err := putItemRevision(tx, it); err != nil {
		return err
	}
	return bumpRules(tx)
}

// ListItems lists the catalog in code order.
func (s *Service) ListItems(ctx context.Context, req *recognitionv1.ListItemsRequest) (*recognitionv1.ListItemsResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.ensureCatalog(ctx, p); err != nil {
		return nil, err
	}
	version, err := readCounter(func(k string) (store.Record, error) { return s.store.Get(ctx, p, k) }, catalogVersionKey)
	if err != nil {
		return nil, err
	}
	resp := &recognitionv1.ListItemsResponse{CatalogVersion: version}
	resp.Items, resp.NextPageToken, err = items.StandardList(ctx, s.store, c, req.GetPageToken(), req.GetPageSize(), "", func(*recognitionv1.Item) bool { return true })
	return resp, err
}

// GetItem returns an item, now or at an earlier catalog version.
func (s *Service) GetItem(ctx context.Context, req *recognitionv1.GetItemRequest) (*recognitionv1.GetItemResponse, error) {
	_, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.ensureCatalog(ctx, p); err != nil {
		return nil, err
	}
	want := req.GetCatalogVersion()
	if want == 0 {
		it, err := items.Load(ctx, s.store, p, req.GetName())
		if err != nil {
			return nil, err
		}
		return &recognitionv1.GetItemResponse{Item: it}, nil
	}
	// An item has few revisions; the last one at or before the version
	// asked for is the definition then.
	recs, _, err := s.store.List(ctx, p, itemRevisionPrefix(items.ID(req.GetName())), "", paging.Max)
	if err != nil {
		return nil, err
	}
	var found *recognitionv1.Item
	for _, rec := range recs {
		it := &recognitionv1.Item{}
		if err := proto.Unmarshal(rec.Value, it); err != nil {
			return nil, fmt.Errorf("decode %s: %w", rec.Key, err)
		}
		if it.GetCatalogVersion() <= want {
			found = it
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%s at catalog version %d: %w", req.GetName(), want, store.ErrNotFound)
	}
	return &recognitionv1.GetItemResponse{Item: found}, nil
}

// CreateItem adds an item to the catalog as a new catalog version.
func (s *Service) CreateItem(ctx context.Context, req *recognitionv1.CreateItemRequest) (*recognitionv1.CreateItemResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.ensureCatalog(ctx, p); err != nil {
		return nil, err
	}
	it := proto.CloneOf(req.GetItem())
	it.Name = items.Name(it.GetCode().GetCode())
	if it.GetCode().GetSystem() == "" {
		it.Code.System = "urn:mcc:recognition:local"
	}
	if it.GetDisplayName() == "" {
		it.DisplayName = it.GetCode().GetDisplay()
	}
	out, err := items.StandardCreate(ctx, s.store, c, req.GetRequestId(), it, s.clock.Now(), nextCatalogVersion)
	if err != nil {
		return nil, err
	}
	return &recognitionv1.CreateItemResponse{Item: out}, nil
}

// UpdateItem changes an item as a new catalog version.
func (s *Service) UpdateItem(ctx context.Context, req *recognitionv1.UpdateItemRequest) (*recognitionv1.UpdateItemResponse, error) {
	c, p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.ensureCatalog(ctx, p); err != nil {
		return nil, err
	}
	out, err := items.StandardUpdate(ctx, s.store, c, req.GetItem(), req.GetUpdateMask(), s.clock.Now(), nextCatalogVersion)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound(req.GetItem().GetName())
	}
	if err != nil {
		return nil, err
	}
	return &recognitionv1.UpdateItemResponse{Item: out}, nil
}
