//go:build !linux

package bolt

import "go.etcd.io/bbolt"

// releaseMap does nothing where madvise is not known to drop the pages of
// a shared read-only map.
func releaseMap(*bbolt.DB) {}
