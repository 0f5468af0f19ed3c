// Package keyfile keeps MCC's secrets (the token signing key, the PII key) as
// PEM files in the data directory, creating them on first start.
package keyfile

import (
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// LoadOrCreate returns the DER bytes of the PEM block of type blockType in
// the file at path. If the file does not exist and create is not nil, it
// writes a new one with the bytes create returns, readable by the owner only,
// and reports created. The write goes through a temporary file and a rename,
// so a crash never leaves a half-written key behind.
func LoadOrCreate(path, blockType string, create func() ([]byte, error)) (der []byte, created bool, err error) {
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		block, _ := pem.Decode(data)
		if block == nil || block.Type != blockType {
			return nil, false, fmt.Errorf("%s: not a PEM %q block", path, blockType)
		}
		return block.Bytes, false, nil
	case !errors.Is(err, fs.ErrNotExist) || create == nil:
		return nil, false, fmt.Errorf("read key: %w", err)
	}
	der, err = create()
	if err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("create key directory: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".key-*")
	if err != nil {
		return nil, false, fmt.Errorf("create key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, false, fmt.Errorf("create key: %w", err)
	}
	if err := pem.Encode(tmp, &pem.Block{Type: blockType, Bytes: der}); err != nil {
		tmp.Close()
		return nil, false, fmt.Errorf("write key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, false, fmt.Errorf("write key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, false, fmt.Errorf("write key: %w", err)
	}
	// Link instead of rename, so that two processes starting at once on an
	// empty data directory cannot both install a key: the loser reads the
	// winner's.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return LoadOrCreate(path, blockType, nil)
		}
		return nil, false, fmt.Errorf("install key: %w", err)
	}
	return der, true, nil
}
