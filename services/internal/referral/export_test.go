package referral

import (
	"context"

	referralv1 "github.com/countymcc/mcc/proto/mcc/referral/v1"
	"github.com/countymcc/mcc/services/internal/store"
)

// Seed stores referrals directly, with their index keys, many in one
// transaction, for benchmarks that need a large store quickly.
func Seed(ctx context.Context, s store.Store, community string, rs []*referralv1.Referral) error {
	const batch = 2000
	for len(rs) > 0 {
		n := min(batch, len(rs))
		err := s.Txn(ctx, store.Partition(community), func(tx store.Tx) error {
			for _, r := range rs[:n] {
				if err := referrals.Create(tx, r); err != nil {
					return err
				}
				if err := reindex(tx, nil, r); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		rs = rs[n:]
	}
	return nil
}
