package admin

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/countymcc/mcc/services/internal/store/bolt"
)

// Restore unpacks a backup archive into dataDir, which must hold no store
// files yet. It writes every store to a temporary file, and installs them
// only once the manifest at the end of the archive has confirmed that each
// is complete; then it opens each one to check it. The keys (signing.key,
// pii.key) are not in the archive: they are backed up apart, once.
func Restore(r io.Reader, dataDir string) (Manifest, error) {
	var m Manifest
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return m, err
	}
	existing, err := filepath.Glob(filepath.Join(dataDir, "*.db"))
	if err != nil {
		return m, err
	}
	if len(existing) > 0 {
		return m, fmt.Errorf("%s already holds store files (%s); restore into an empty data directory", dataDir, filepath.Base(existing[0]))
	}
	written := map[string]int64{}
	var temps []string
	defer func() {
		for _, t := range temps {
			os.Remove(t)
		}
	}()
	tr := tar.NewReader(r)
	gotManifest := false
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return m, fmt.Errorf("read archive: %w", err)
		}
		switch {
		case h.Name == ManifestName:
			if err := json.NewDecoder(tr).Decode(&m); err != nil {
				return m, fmt.Errorf("read manifest: %w", err)
			}
			gotManifest = true
		case strings.HasSuffix(h.Name, ".db") && filepath.Base(h.Name) == h.Name:
			tmp := filepath.Join(dataDir, ".restore-"+h.Name)
			temps = append(temps, tmp)
			n, err := writeFile(tmp, tr)
			if err != nil {
				return m, err
			}
			written[h.Name] = n
		default:
			return m, fmt.Errorf("unexpected entry %q in the archive", h.Name)
		}
	}
	if !gotManifest {
		return m, errors.New("the archive has no manifest: it is incomplete (was the backup interrupted?)")
	}
	for _, f := range m.Stores {
		if n, ok := written[f.File]; !ok || n != f.Size {
			return m, fmt.Errorf("%s: the archive holds %d of its %d bytes", f.File, n, f.Size)
		}
	}
	for _, f := range m.Stores {
		final := filepath.Join(dataDir, f.File)
		if err := os.Rename(filepath.Join(dataDir, ".restore-"+f.File), final); err != nil {
			return m, err
		}
		s, err := bolt.Open(final, bolt.Options{})
		if err != nil {
			return m, fmt.Errorf("restored %s does not open: %w", f.File, err)
		}
		if err := s.Close(); err != nil {
			return m, err
		}
	}
	return m, syncDir(dataDir)
}

func writeFile(path string, r io.Reader) (int64, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
