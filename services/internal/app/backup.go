package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"

	adminv1 "github.com/countymcc/mcc/proto/mcc/admin/v1"
	"github.com/countymcc/mcc/services/internal/admin"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
	"github.com/countymcc/mcc/services/internal/platform/peer"
)

// runBackup streams a running mcc's backup into a file. It writes to
// FILE.partial and renames it only when the archive is complete, so a file
// named FILE is always a whole backup.
func runBackup(ctx context.Context, args []string, env Env) error {
	var out, dataDir, signingKey, services string
	var cf clientFlags
	fs := newFlagSet("mcc backup", env)
	cf.register(fs, "localhost:9090", "gRPC address of the running mcc")
	fs.StringVar(&out, "out", "", "archive file to write (required)")
	fs.StringVar(&dataDir, "data-dir", "./data", "data directory holding signing.key")
	fs.StringVar(&signingKey, "auth.signing-key", "", "signing key file (default <data-dir>/signing.key)")
	fs.StringVar(&services, "services", "", "comma list of services to back up (default all)")
	if err := parse(fs, args, env); err != nil {
		return err
	}
	if out == "" {
		return errors.New("-out: required")
	}
	if signingKey == "" {
		signingKey = filepath.Join(dataDir, "signing.key")
	}
	keys, _, err := auth.LoadKeys(signingKey, false, clock.System{})
	if err != nil {
		return err
	}
	// The backup is process-wide, so it takes the service role, which only
	// the holder of the signing key can sign for.
	tok, err := keys.Issue(auth.ServiceCaller("operator", peer.ServiceFacility, "backup"), time.Hour)
	if err != nil {
		return err
	}
	conn, err := cf.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	req := &adminv1.BackupRequest{Services: splitList(services)}
	stream, err := adminv1.NewAdminServiceClient(conn).Backup(ctx, req)
	if err != nil {
		return err
	}
	partial := out + ".partial"
	f, err := os.OpenFile(partial, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(partial)
	var n int64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			f.Close()
			return err
		}
		w, err := f.Write(msg.GetChunk())
		n += int64(w)
		if err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(partial, out); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "wrote %s (%d bytes)\n", out, n)
	return nil
}

// runRestore unpacks a backup into an empty data directory.
func runRestore(args []string, env Env) error {
	var in, dataDir string
	fs := newFlagSet("mcc restore", env)
	fs.StringVar(&in, "in", "", "archive file written by mcc backup (required)")
	fs.StringVar(&dataDir, "data-dir", "", "empty data directory to restore into (required)")
	if err := parse(fs, args, env); err != nil {
		return err
	}
	if in == "" || dataDir == "" {
		return errors.New("-in and -data-dir are required")
	}
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	m, err := admin.Restore(f, dataDir)
	if err != nil {
		return err
	}
	var names []string
	for _, s := range m.Stores {
		names = append(names, s.Service)
	}
	fmt.Fprintf(env.Stdout, "restored %s taken at %s into %s; copy signing.key and pii.key there before starting mcc\n",
		strings.Join(names, ", "), m.Created.Format(time.RFC3339), dataDir)
	return nil
}
