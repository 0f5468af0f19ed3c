package bolt

import (
	"syscall"

	"go.etcd.io/bbolt"
)

// releaseMap drops the pages of the file's read-only memory map from the
// process's resident set. Opening the file rebuilds the freelist by reading
// every page (NoFreelistSync), which would otherwise leave a process with
// a large store resident at about the file's size from the start. The pages
// stay in the kernel's page cache, and a later read maps them again without
// going to disk.
func releaseMap(db *bbolt.DB) {
	var size int64
	_ = db.View(func(tx *bbolt.Tx) error {
		size = tx.Size()
		return nil
	})
	// Advice only: if it fails, the pages stay resident as before.
	_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, db.Info().Data, uintptr(size), syscall.MADV_DONTNEED)
}
