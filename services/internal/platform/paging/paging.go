// Package paging implements the page_size and page_token rules of every MCC
// List method.
package paging

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"

	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/store"
)

// Default and Max are the page sizes used when the caller asks for none, and
// the most one page can hold.
const (
	Default = 50
	Max     = 1000
)

// Size returns the page size for a requested one: Default for 0, at most Max.
func Size(requested int32) int {
	switch {
	case requested <= 0:
		return Default
	case requested > Max:
		return Max
	default:
		return int(requested)
	}
}

// tokenVersion is the first byte of every token, so the format can change.
const tokenVersion = 1

// Encode returns an opaque token that resumes a listing after key. Filter
// describes the request's filters; the token is only accepted back with the
// same filter.
func Encode(key, filter string) string {
	b := make([]byte, 0, 1+8+len(key))
	b = append(b, tokenVersion)
	b = binary.BigEndian.AppendUint64(b, checksum(key, filter))
	b = append(b, key...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Decode returns the key a token resumes after. An empty token starts at the
// beginning. A token that was not made by Encode for the same filter is an
// InvalidArgument on page_token.
func Decode(token, filter string) (string, error) {
	if token == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) < 9 || b[0] != tokenVersion {
		return "", apierr.Invalid("page_token", "not a page token of this list")
	}
	key := string(b[9:])
	if binary.BigEndian.Uint64(b[1:9]) != checksum(key, filter) {
		return "", apierr.Invalid("page_token", "not a page token of this list, or used with other filters")
	}
	return key, nil
}

func checksum(key, filter string) uint64 {
	h := sha256.New()
	h.Write([]byte(filter))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return binary.BigEndian.Uint64(h.Sum(nil))
}

// maxScanned bounds the records one Scan reads, so a filter that matches
// little cannot make one call read a whole partition. A short page with a
// token is a valid answer; the caller simply continues.
const maxScanned = 5000

// Scan lists records of prefix after the key `after`, calling keep on each,
// until keep has accepted size of them. It returns the key to resume after,
// or "" when the listing is complete.
func Scan(ctx context.Context, s store.Store, p store.Partition, prefix, after string, size int, keep func(store.Record) (bool, error)) (string, error) {
	kept, scanned := 0, 0
	for {
		batch := size - kept
		if batch < 64 {
			batch = 64
		}
		recs, more, err := s.List(ctx, p, prefix, after, batch)
		if err != nil {
			return "", err
		}
		for i, r := range recs {
			scanned++
			ok, err := keep(r)
			if err != nil {
				return "", err
			}
			if ok {
				kept++
			}
			after = r.Key
			if kept == size || scanned >= maxScanned {
				if i < len(recs)-1 || more {
					return after, nil
				}
				return "", nil
			}
		}
		if !more {
			return "", nil
		}
	}
}
