// Package app is the `mcc` program: the server with its targets, and the
// administrator's subcommands.
//
//	mcc [flags]                                  run the targets of -target (all by default)
//	mcc token -facility ID -role ROLE [flags]    print a bearer token
//	mcc seed demo [flags]                        load the demo community into a running mcc
//	mcc backup -out FILE [flags]                 snapshot a running mcc's embedded stores
//	mcc restore -in FILE -data-dir DIR           unpack a backup into an empty data directory
//	mcc health [-addr host:port]                 exit 0 if a running mcc is serving
//	mcc keys -dir DIR                            create the signing and PII keys
//	mcc keys rotate -dir DIR                     replace the signing key, keeping the old one
//	mcc certs -dir DIR                           make a local CA and certificates for TLS
//	mcc feed tail -facility ID [flags]           print a facility's feed live
//	mcc bench [flags]                            load-test an mcc (docs/BENCHMARKS.md)
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/countymcc/mcc/services/internal/platform/config"
	"github.com/countymcc/mcc/services/internal/platform/telemetry"
)

// Env is what Run takes from the process: its environment and output.
type Env struct {
	Getenv func(string) string
	Stdout io.Writer
	Stderr io.Writer
}

// Run runs mcc with the command-line arguments args (without the program
// name) until ctx ends.
func Run(ctx context.Context, args []string, env Env) error {
	err := run(ctx, args, env)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

func run(ctx context.Context, args []string, env Env) error {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		switch args[0] {
		case "token":
			return runToken(args[1:], env)
		case "seed":
			return runSeed(ctx, args[1:], env)
		case "backup":
			return runBackup(ctx, args[1:], env)
		case "restore":
			return runRestore(args[1:], env)
		case "health":
			return runHealth(ctx, args[1:], env)
		case "keys":
			return runKeys(args[1:], env)
		case "certs":
			return runCerts(args[1:], env)
		case "feed":
			return runFeed(ctx, args[1:], env)
		case "audit":
			return runAudit(ctx, args[1:], env)
		case "bench":
			return runBench(ctx, args[1:], env)
		case "help":
			args = []string{"-help"}
		default:
			return fmt.Errorf("unknown command %q (commands: token, seed, backup, restore, health, keys, certs, feed, audit, bench; or flags to run the server)", args[0])
		}
	}
	return runServer(ctx, args, env)
}

// LoadConfig parses the server's flags and MCC_* variables.
func LoadConfig(args []string, env Env) (Config, error) {
	var cfg Config
	fs := newFlagSet("mcc", env)
	cfg.RegisterFlags(fs)
	err := parse(fs, args, env)
	return cfg, err
}

func runServer(ctx context.Context, args []string, env Env) error {
	cfg, err := LoadConfig(args, env)
	if err != nil {
		return err
	}
	logger := telemetry.NewLogger(env.Stderr, cfg.LogLevel)
	sys, err := New(ctx, cfg, logger, Options{Getenv: env.Getenv})
	if err != nil {
		return err
	}
	return sys.Run(ctx)
}

func newFlagSet(name string, env Env) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	return fs
}

// parse parses args, then applies MCC_* variables to the flags not given.
// After -help it returns flag.ErrHelp, which Run treats as success.
func parse(fs *flag.FlagSet, args []string, env Env) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return config.ApplyEnv(fs, env.Getenv)
}
