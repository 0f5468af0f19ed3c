// Package admin operates one mcc process: today, the online backup of its
// embedded stores.
package admin

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"time"

	"google.golang.org/grpc"

	adminv1 "github.com/countymcc/mcc/proto/mcc/admin/v1"
	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/apierr"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
)

// Name is the service's name.
const Name = "admin"

// Backuper is a store that can copy itself while serving (bolt.Store).
type Backuper interface {
	Backup(w io.Writer, begin func(size int64) error) error
}

// Service implements adminv1.AdminService.
type Service struct {
	adminv1.UnimplementedAdminServiceServer
	stores map[string]Backuper
	clock  clock.Clock
}

var _ adminv1.AdminServiceServer = (*Service)(nil)

// New returns the admin service of a process whose embedded stores are
// stores, by service name.
func New(stores map[string]Backuper, clk clock.Clock) *Service {
	return &Service{stores: stores, clock: clk}
}

// Register adds the service to a gRPC server.
func (s *Service) Register(srv *grpc.Server) { adminv1.RegisterAdminServiceServer(srv, s) }

// Policy opens Backup to the service role only. A backup holds every
// community of the process, so no community administrator may take it; the
// operator signs a service token with the signing key (`mcc backup` does).
func Policy() auth.Policy {
	return auth.Policy{"/mcc.admin.v1.AdminService/Backup": {typev1.Role_ROLE_SERVICE}}
}

// Manifest is the last entry of a backup archive. Restore checks it, so a
// truncated archive is never mistaken for a complete one.
type Manifest struct {
	Format  int         `json:"format"`
	Created time.Time   `json:"created"`
	Stores  []StoreFile `json:"stores"`
}

// StoreFile is one store in an archive.
type StoreFile struct {
	Service string `json:"service"`
	File    string `json:"file"`
	Size    int64  `json:"size"`
}

// ManifestName is the file name of the manifest in the archive.
const ManifestName = "backup.json"

// chunkSize is the size of one streamed piece.
const chunkSize = 256 << 10

// Backup streams the archive: one <service>.db entry per store, then the
// manifest.
func (s *Service) Backup(req *adminv1.BackupRequest, stream grpc.ServerStreamingServer[adminv1.BackupResponse]) error {
	names := req.GetServices()
	if len(names) == 0 {
		for name := range s.stores {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	if len(s.stores) == 0 {
		return apierr.Condition("NO_EMBEDDED_STORE", "this process keeps its state in Redis; back it up with Redis persistence (AOF, RDB snapshots)")
	}
	for _, name := range names {
		if _, ok := s.stores[name]; !ok {
			return apierr.Invalid("services", "%q has no embedded store in this process", name)
		}
	}
	out := &chunkWriter{send: func(b []byte) error { return stream.Send(&adminv1.BackupResponse{Chunk: b}) }}
	tw := tar.NewWriter(out)
	m := Manifest{Format: 1, Created: s.clock.Now().UTC()}
	for _, name := range names {
		f := StoreFile{Service: name, File: name + ".db"}
		err := s.stores[name].Backup(tw, func(size int64) error {
			f.Size = size
			return tw.WriteHeader(&tar.Header{Name: f.File, Mode: 0o600, Size: size, ModTime: m.Created, Typeflag: tar.TypeReg})
		})
		if err != nil {
			return fmt.Errorf("backup %s: %w", name, err)
		}
		m.Stores = append(m.Stores, f)
	}
	manifest, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: ManifestName, Mode: 0o600, Size: int64(len(manifest)), ModTime: m.Created, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := tw.Write(manifest); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return out.flush()
}

// chunkWriter sends what is written to it in pieces of chunkSize.
type chunkWriter struct {
	buf  []byte
	send func([]byte) error
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		room := chunkSize - len(w.buf)
		take := min(room, len(p))
		w.buf = append(w.buf, p[:take]...)
		p = p[take:]
		if len(w.buf) == chunkSize {
			if err := w.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (w *chunkWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	err := w.send(w.buf)
	w.buf = make([]byte, 0, chunkSize)
	return err
}
