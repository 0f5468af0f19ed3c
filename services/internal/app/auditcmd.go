package app

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"google.golang.org/grpc/metadata"

	auditv1 "github.com/countymcc/mcc/proto/mcc/audit/v1"
	"github.com/countymcc/mcc/services/internal/audit"
	platformaudit "github.com/countymcc/mcc/services/internal/platform/audit"
	"github.com/countymcc/mcc/services/internal/store"
	"github.com/countymcc/mcc/services/internal/store/bolt"
	storeredis "github.com/countymcc/mcc/services/internal/store/redis"
)

// runAudit runs the `mcc audit` commands; `verify` is the only one.
func runAudit(ctx context.Context, args []string, env Env) error {
	if len(args) == 0 || args[0] != "verify" {
		return errors.New("usage: mcc audit verify [flags]; see mcc audit verify -help")
	}
	return runAuditVerify(ctx, args[1:], env)
}

// runAuditVerify checks audit chains: offline from the store (the bolt file
// of a stopped mcc, or Redis), or online through AuditService.VerifyChain
// of a running mcc with an auditor's token. It fails, naming the first bad
// record, when any chain does not verify.
func runAuditVerify(ctx context.Context, args []string, env Env) error {
	var cfg Config
	var community, token string
	fs := newFlagSet("mcc audit verify", env)
	fs.StringVar(&cfg.Store, "store", "bolt", "where the trail is: bolt (the audit.db of -data-dir; stop mcc first) or redis")
	fs.StringVar(&cfg.DataDir, "data-dir", "./data", "data directory holding audit.db")
	cfg.Redis.RegisterFlags(fs)
	fs.StringVar(&community, "community", "", "community to verify offline (default: every community in the store; online, the token's community)")
	fs.StringVar(&token, "token", "", "an auditor's token, with -addr (mcc token -role auditor)")
	var cf clientFlags
	cf.register(fs, "", "gRPC address of a running mcc: verify online with AuditService.VerifyChain instead of reading the store")
	if err := parse(fs, args, env); err != nil {
		return err
	}
	if cf.addr != "" {
		return verifyOnline(ctx, cf, token, env)
	}
	st, err := openAuditStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	trail := platformaudit.NewTrail(st)
	communities := []string{community}
	if community == "" {
		if communities, err = trail.Communities(ctx); err != nil {
			return err
		}
	}
	var broken []string
	for _, c := range communities {
		v, err := trail.Verify(ctx, c)
		if err != nil {
			return fmt.Errorf("community %s: %w", c, err)
		}
		fmt.Fprintf(env.Stdout, "community %s: %s\n", c, v)
		if !v.OK() {
			broken = append(broken, fmt.Sprintf("%s at %s (%s)", c, platformaudit.RecordName(v.Bad), v.Problem))
		}
	}
	if len(broken) > 0 {
		return fmt.Errorf("audit chain broken: %s", strings.Join(broken, "; "))
	}
	if len(communities) == 0 {
		fmt.Fprintln(env.Stdout, "no audit records yet")
	}
	return nil
}

// openAuditStore opens the audit store for reading, as mcc would.
func openAuditStore(ctx context.Context, cfg Config) (store.Store, error) {
	switch cfg.Store {
	case "bolt":
		path := filepath.Join(cfg.DataDir, audit.Name+".db")
		if !fileExists(path) {
			return nil, fmt.Errorf("-data-dir: no %s", path)
		}
		st, err := bolt.Open(path, bolt.Options{})
		if err != nil {
			return nil, fmt.Errorf("-data-dir: %w (is mcc still running on it?)", err)
		}
		return st, nil
	case "redis":
		client, err := storeredis.Dial(ctx, cfg.Redis.client(nil))
		if err != nil {
			return nil, fmt.Errorf("-redis-addr: %w", err)
		}
		st, err := storeredis.New(client, storeredis.Options{Prefix: cfg.Redis.Prefix, Service: audit.Name})
		if err != nil {
			client.Close()
			return nil, err
		}
		return closeBoth{st, client}, nil
	}
	return nil, fmt.Errorf("-store: must be bolt or redis, not %q", cfg.Store)
}

// closeBoth closes a Redis store and the client it was made with.
type closeBoth struct {
	store.Store
	client interface{ Close() error }
}

func (c closeBoth) Close() error { return errors.Join(c.Store.Close(), c.client.Close()) }

// verifyOnline asks a running mcc to verify the chain of the token's
// community.
func verifyOnline(ctx context.Context, cf clientFlags, token string, env Env) error {
	if token == "" {
		return errors.New("-token: required with -addr (an auditor's token)")
	}
	conn, err := cf.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token, platformaudit.PurposeMetadata, "AUDIT-VERIFY")
	v, err := auditv1.NewAuditServiceClient(conn).VerifyChain(ctx, &auditv1.VerifyChainRequest{})
	if err != nil {
		return fmt.Errorf("VerifyChain at %s: %w", cf.addr, err)
	}
	if !v.GetValid() {
		fmt.Fprintf(env.Stdout, "%s: %s\n", v.GetBadRecord(), v.GetProblem())
		return fmt.Errorf("audit chain broken at %s (%s)", v.GetBadRecord(), v.GetProblem())
	}
	fmt.Fprintf(env.Stdout, "ok: %d records checked, %d..%d, head hash %x\n", v.GetChecked(), v.GetFirstSequence(), v.GetHeadSequence(), v.GetHeadHash())
	return nil
}
