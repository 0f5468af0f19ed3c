package store

import (
	"context"
	"iter"
)

// Lister is the part of Store that Scan reads through.
type Lister interface {
	List(ctx context.Context, p Partition, prefix, after string, limit int) (recs []Record, more bool, err error)
}

// Scan yields, in key order, the records of p whose keys start with prefix
// and sort after the key after, reading page records at a time. A failed
// read is yielded as its error with an empty Record, and ends the scan;
// breaking out of the loop ends it too, before the next read.
func Scan(ctx context.Context, st Lister, p Partition, prefix, after string, page int) iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		for {
			recs, more, err := st.List(ctx, p, prefix, after, page)
			if err != nil {
				yield(Record{}, err)
				return
			}
			for _, r := range recs {
				if !yield(r, nil) {
					return
				}
				after = r.Key
			}
			if !more || len(recs) == 0 {
				return
			}
		}
	}
}
