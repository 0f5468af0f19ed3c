// Package audit keeps MCC's audit trail: one record for every call that
// touches patient data, appended to a hash chain per medical community.
//
// Every process that serves gRPC writes its records into the shared audit
// store (audit.db in embedded mode, the "audit" key space in Redis), in the
// community's partition. A record is appended in one store transaction that
// reads the chain's head, links the record to it and moves the head, so on
// Redis many replicas append to the same chain and a lost race simply runs
// the transaction again: the chain stays one line with no gap and no fork.
//
// Each record's hash is SHA-256 over the previous record's hash and the
// record's deterministic protobuf encoding (with the hash field empty).
// Editing a record breaks its hash; deleting one leaves a gap in the
// sequence; moving one breaks the sequence or the links. Verify finds the
// first such record. Retention deletes the oldest records and keeps the
// hash of the last one deleted as the anchor the chain starts from.
package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	auditv1 "github.com/countymcc/mcc/proto/mcc/audit/v1"
	"github.com/countymcc/mcc/services/internal/store"
)

// Keys of one community's partition in the audit store.
const (
	headKey      = "head"
	anchorKey    = "anchor"
	recordPrefix = "r/"
	// patientPrefix, actorPrefix and timePrefix are indexes whose keys end
	// in the record's sequence.
	patientPrefix = "p/"
	actorPrefix   = "a/"
	timePrefix    = "t/"
)

// RecordName is the resource name of the record with sequence seq.
func RecordName(seq uint64) string { return string(padded([]byte("auditRecords/"), seq)) }

// padded appends n to b as 20 zero-padded digits, so keys sort by number.
func padded(b []byte, n uint64) []byte {
	var digits [20]byte
	for i := len(digits) - 1; i >= 0; i-- {
		digits[i] = byte('0' + n%10)
		n /= 10
	}
	return append(b, digits[:]...)
}

func seqKey(seq uint64) string { return string(padded(nil, seq)) }

func recordKey(seq uint64) string { return string(padded([]byte(recordPrefix), seq)) }

func patientIndex(patient string) string { return patientPrefix + url.QueryEscape(patient) + "/" }

func actorIndex(subject string) string { return actorPrefix + url.QueryEscape(subject) + "/" }

func timeIndex(t time.Time) string {
	return string(append(padded([]byte(timePrefix), uint64(max(t.UnixNano(), 0))), '/'))
}

// Trail is the audit trail in a store.
type Trail struct {
	st store.Store
}

// NewTrail returns the trail kept in st.
func NewTrail(st store.Store) *Trail { return &Trail{st: st} }

// link is a position in the chain: a sequence and the hash of its record.
type link struct {
	seq  uint64
	hash []byte
}

func (l link) encode() []byte {
	return append(binary.BigEndian.AppendUint64(nil, l.seq), l.hash...)
}

func decodeLink(b []byte) (link, error) {
	if len(b) != 8+sha256.Size {
		return link{}, fmt.Errorf("audit: chain link of %d bytes", len(b))
	}
	return link{seq: binary.BigEndian.Uint64(b[:8]), hash: bytes.Clone(b[8:])}, nil
}

func readLink(get func(string) (store.Record, error), key string) (link, uint64, error) {
	rec, err := get(key)
	if errors.Is(err, store.ErrNotFound) {
		return link{}, 0, nil
	}
	if err != nil {
		return link{}, 0, err
	}
	l, err := decodeLink(rec.Value)
	return l, rec.Version, err
}

// Hash returns the hash a record must carry: SHA-256 over its previous
// hash and its deterministic encoding with the hash field empty, as seal
// computes it.
func Hash(rec *auditv1.AuditRecord) ([]byte, error) {
	c := proto.CloneOf(rec)
	if _, err := seal(c); err != nil {
		return nil, err
	}
	return c.Hash, nil
}

// staleAttempts bounds how often Append starts again after finding that
// another process appended after the head it read.
const staleAttempts = 50

// hashField is the field number of AuditRecord.hash, the record's last
// field.
const hashField = 18

// seal sets rec's hash and returns its stored bytes with one encoding: the
// deterministic encoding without the hash is what the hash covers, and since
// the hash is the last field, appending it gives exactly the deterministic
// encoding of the whole record.
func seal(rec *auditv1.AuditRecord) ([]byte, error) {
	rec.Hash = nil
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(rec)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write(rec.GetPreviousHash())
	h.Write(b)
	rec.Hash = h.Sum(nil)
	b = protowire.AppendTag(b, hashField, protowire.BytesType)
	return protowire.AppendBytes(b, rec.Hash), nil
}

// Append links recs to the end of community's chain, in order, in one
// transaction, and sets their sequence, name and hashes.
//
// On Redis every replica appends to the same chain, so their transactions
// race for its head. A lost race is not a corrupt chain, so Append runs the
// transaction again from the new head: when the store ran out of its own
// attempts (ErrConflict, many replicas appending at once), and when the
// head was read before another replica's commit and the next record's key
// after it, which the record's Create finds taken (ErrAlreadyExists; a
// Redis transaction's reads are not one snapshot).
func (t *Trail) Append(ctx context.Context, community string, recs []*auditv1.AuditRecord) error {
	for attempt := 1; ; attempt++ {
		err := t.append(ctx, community, recs)
		if !lostRace(err) || attempt == staleAttempts {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(rand.IntN(attempt*2)+1) * time.Millisecond):
		}
	}
}

// lostRace reports whether err is another replica's append getting there
// first.
func lostRace(err error) bool {
	return errors.Is(err, store.ErrAlreadyExists) || errors.Is(err, store.ErrConflict)
}

func (t *Trail) append(ctx context.Context, community string, recs []*auditv1.AuditRecord) error {
	return t.st.Txn(ctx, store.Partition(community), func(tx store.Tx) error {
		head, version, err := readLink(tx.Get, headKey)
		if err != nil {
			return err
		}
		for _, rec := range recs {
			rec.Community = community
			rec.Sequence = head.seq + 1
			rec.Name = RecordName(rec.Sequence)
			rec.PreviousHash = head.hash
			b, err := seal(rec)
			if err != nil {
				return err
			}
			if err := tx.Create(recordKey(rec.Sequence), b); err != nil {
				return fmt.Errorf("audit: record %d: %w", rec.Sequence, err)
			}
			seq := []byte(seqKey(rec.Sequence))
			for _, key := range indexKeys(rec) {
				if err := tx.Put(key, seq); err != nil {
					return err
				}
			}
			head = link{seq: rec.Sequence, hash: rec.Hash}
		}
		if version == 0 {
			return tx.Create(headKey, head.encode())
		}
		return tx.Update(headKey, head.encode(), version)
	})
}

// indexKeys are the index entries of rec.
func indexKeys(rec *auditv1.AuditRecord) []string {
	seq := seqKey(rec.GetSequence())
	keys := []string{timeIndex(rec.GetTime().AsTime()) + seq}
	if rec.GetSubject() != "" {
		keys = append(keys, actorIndex(rec.GetSubject())+seq)
	}
	for _, p := range rec.GetPatients() {
		keys = append(keys, patientIndex(p)+seq)
	}
	return keys
}

func decodeRecord(b []byte) (*auditv1.AuditRecord, error) {
	rec := &auditv1.AuditRecord{}
	if err := proto.Unmarshal(b, rec); err != nil {
		return nil, fmt.Errorf("audit: decoding a record: %w", err)
	}
	return rec, nil
}

// Verification is the outcome of Verify.
type Verification struct {
	// Checked is how many records were checked.
	Checked uint64
	// First is the sequence the kept chain starts at (after the anchor).
	First uint64
	// Head is the last sequence, and HeadHash its hash.
	Head     uint64
	HeadHash []byte
	// Bad is the sequence of the first record that failed (0: none), and
	// Problem what failed.
	Bad     uint64
	Problem string
}

// OK reports whether the chain verified.
func (v Verification) OK() bool { return v.Bad == 0 && v.Problem == "" }

func (v Verification) String() string {
	if v.OK() {
		return fmt.Sprintf("ok: %d records checked, %d..%d, head hash %x", v.Checked, v.First, v.Head, v.HeadHash)
	}
	return fmt.Sprintf("%s: %s", RecordName(v.Bad), v.Problem)
}

// verifyPage is how many records Verify reads at once.
const verifyPage = 500

// Verify checks community's chain from its anchor to its head and names the
// first record that is missing, moved, unlinked or edited.
func (t *Trail) Verify(ctx context.Context, community string) (Verification, error) {
	p := store.Partition(community)
	get := func(key string) (store.Record, error) { return t.st.Get(ctx, p, key) }
	anchor, _, err := readLink(get, anchorKey)
	if err != nil {
		return Verification{}, err
	}
	head, _, err := readLink(get, headKey)
	if err != nil {
		return Verification{}, err
	}
	v := Verification{First: anchor.seq + 1, Head: head.seq, HeadHash: head.hash}
	want, prev := anchor.seq+1, anchor.hash
	fail := func(seq uint64, problem string) (Verification, error) {
		v.Bad, v.Problem = seq, problem
		return v, nil
	}
	for r, err := range store.Scan(ctx, t.st, p, recordPrefix, "", verifyPage) {
		if err != nil {
			return Verification{}, err
		}
		seq, err := strconv.ParseUint(strings.TrimPrefix(r.Key, recordPrefix), 10, 64)
		if err != nil {
			return fail(want, fmt.Sprintf("a record is stored under the malformed key %q", r.Key))
		}
		switch {
		case seq < want:
			return fail(seq, "is older than the chain's anchor: it should have been pruned, or was put back")
		case seq > want:
			return fail(want, "is missing: the chain jumps from the record before it to "+RecordName(seq))
		}
		rec, err := decodeRecord(r.Value)
		if err != nil {
			return fail(seq, "cannot be decoded")
		}
		if rec.GetSequence() != seq || rec.GetName() != RecordName(seq) {
			return fail(seq, fmt.Sprintf("holds record %d: records were moved", rec.GetSequence()))
		}
		if !bytes.Equal(rec.GetPreviousHash(), prev) {
			return fail(seq, "does not link to the hash of the record before it")
		}
		h, err := Hash(rec)
		if err != nil {
			return Verification{}, err
		}
		if !bytes.Equal(h, rec.GetHash()) || rec.GetCommunity() != community {
			return fail(seq, "does not match its hash: it was edited")
		}
		prev = rec.GetHash()
		want++
		v.Checked++
	}
	switch {
	case want-1 < head.seq:
		return fail(want, fmt.Sprintf("is missing: the chain ends before its head %d", head.seq))
	case want-1 > head.seq:
		return fail(head.seq+1, fmt.Sprintf("is past the chain's head %d: the head was moved back", head.seq))
	case !bytes.Equal(prev, head.hash):
		return fail(head.seq, "is not the record the head names")
	}
	return v, nil
}

// pruneBatch is how many records one pruning transaction deletes.
const pruneBatch = 200

// Prune deletes community's records older than cutoff, oldest first, and
// moves the anchor to the last one deleted, so that Verify still checks the
// rest from a known hash. It stops at the first record not older than
// cutoff, so the kept records are always one unbroken end of the chain. It
// returns how many records it deleted.
func (t *Trail) Prune(ctx context.Context, community string, cutoff time.Time) (int, error) {
	p := store.Partition(community)
	total := 0
	for {
		recs, _, err := t.st.List(ctx, p, recordPrefix, "", pruneBatch)
		if err != nil {
			return total, err
		}
		var old []*auditv1.AuditRecord
		for _, r := range recs {
			rec, err := decodeRecord(r.Value)
			if err != nil {
				return total, err
			}
			if !rec.GetTime().AsTime().Before(cutoff) {
				break
			}
			old = append(old, rec)
		}
		if len(old) == 0 {
			return total, nil
		}
		err = t.st.Txn(ctx, p, func(tx store.Tx) error {
			for _, rec := range old {
				if err := tx.Delete(recordKey(rec.GetSequence()), 0); err != nil {
					return err
				}
				for _, key := range indexKeys(rec) {
					if err := tx.Delete(key, 0); err != nil {
						return err
					}
				}
			}
			last := old[len(old)-1]
			return tx.Put(anchorKey, link{seq: last.GetSequence(), hash: last.GetHash()}.encode())
		})
		if err != nil {
			return total, err
		}
		total += len(old)
		if len(old) < len(recs) {
			return total, nil
		}
	}
}

// Communities lists the communities that have a chain.
func (t *Trail) Communities(ctx context.Context) ([]string, error) {
	parts, err := t.st.Partitions(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(parts))
	for _, p := range parts {
		out = append(out, string(p))
	}
	return out, nil
}
