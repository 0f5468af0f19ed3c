// Package config applies MCC_* environment variables to command-line flags.
//
// Every setting of mcc is a flag, registered by the package that uses it
// (dskit's RegisterFlags pattern), so `mcc -help` documents all of them. An
// environment variable overrides a flag's default, and an explicit flag on the
// command line overrides both: Kubernetes manifests set env, people type flags.
package config

import (
	"flag"
	"fmt"
	"strings"
)

// EnvName is the environment variable that sets the flag called name:
// "lab.mllp-addr" is set by MCC_LAB_MLLP_ADDR.
func EnvName(name string) string {
	r := strings.NewReplacer(".", "_", "-", "_")
	return "MCC_" + strings.ToUpper(r.Replace(name))
}

// ApplyEnv sets each flag of fs that was not given on the command line from
// its environment variable, if that is set. Call it after fs.Parse.
func ApplyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || explicit[f.Name] {
			return
		}
		env := EnvName(f.Name)
		v := getenv(env)
		if v == "" {
			return
		}
		if setErr := fs.Set(f.Name, v); setErr != nil {
			err = fmt.Errorf("%s: invalid value for -%s: %w", env, f.Name, setErr)
		}
	})
	return err
}
