package app

import (
	"context"
	"fmt"
	"os"

	"github.com/countymcc/mcc/services/internal/bench"
)

// runBench runs the load tool (`mcc bench`, docs/BENCHMARKS.md). The mcc it
// starts is this same executable.
func runBench(ctx context.Context, args []string, env Env) error {
	var cfg bench.Config
	fs := newFlagSet("mcc bench", env)
	cfg.RegisterFlags(fs)
	if err := parse(fs, args, env); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the mcc executable to start: %w", err)
	}
	return bench.Run(ctx, cfg, exe, env.Stdout)
}
