package app

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
	"github.com/countymcc/mcc/services/internal/platform/auth"
	"github.com/countymcc/mcc/services/internal/platform/clock"
)

// tokenFlags are the flags of `mcc token`.
type tokenFlags struct {
	community  string
	facility   string
	roles      string
	subject    string
	ttl        time.Duration
	dataDir    string
	signingKey string
}

// runToken prints a bearer token signed with the community key. It is the
// administrator's way to get a token without an identity provider.
func runToken(args []string, env Env) error {
	var f tokenFlags
	fs := newFlagSet("mcc token", env)
	fs.StringVar(&f.community, "community", "demo", "medical community ID")
	fs.StringVar(&f.facility, "facility", "", "facility ID or resource name (required)")
	fs.StringVar(&f.roles, "role", "", "role or comma list of roles: "+roleList()+" (required)")
	fs.StringVar(&f.subject, "subject", "", "token subject, e.g. a practitioner resource name (default: cli:<role>)")
	fs.DurationVar(&f.ttl, "ttl", time.Hour, "how long the token is valid")
	fs.StringVar(&f.dataDir, "data-dir", "./data", "data directory holding signing.key")
	fs.StringVar(&f.signingKey, "auth.signing-key", "", "signing key file (default <data-dir>/signing.key)")
	if err := parse(fs, args, env); err != nil {
		return err
	}
	token, err := f.issue()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(env.Stdout, token)
	return err
}

func (f tokenFlags) issue() (string, error) {
	if f.facility == "" || f.roles == "" {
		return "", errors.New("-facility and -role are required")
	}
	if f.ttl <= 0 || f.ttl > 30*24*time.Hour {
		return "", errors.New("-ttl: must be positive and at most 720h")
	}
	c := auth.Caller{Community: f.community, Facility: f.facility, Subject: f.subject}
	if !strings.HasPrefix(c.Facility, "facilities/") {
		c.Facility = "facilities/" + c.Facility
	}
	for _, r := range strings.Split(f.roles, ",") {
		role, err := auth.ParseRole(r)
		if err != nil {
			return "", fmt.Errorf("-role: %w", err)
		}
		c.Roles = append(c.Roles, role)
	}
	if c.Subject == "" {
		c.Subject = "cli:" + auth.RoleName(c.Roles[0])
	}
	path := f.signingKey
	if path == "" {
		path = filepath.Join(f.dataDir, "signing.key")
	}
	keys, _, err := auth.LoadKeys(path, false, clock.System{})
	if err != nil {
		return "", fmt.Errorf("%w (start mcc once to create it, or pass -data-dir)", err)
	}
	return keys.Issue(c, f.ttl)
}

func roleList() string {
	var names []string
	for _, r := range auth.AnyRole() {
		if r != typev1.Role_ROLE_SERVICE {
			names = append(names, auth.RoleName(r))
		}
	}
	return strings.Join(names, ", ")
}
