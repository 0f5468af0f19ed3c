package sterilization

import (
	"errors"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	sterilizationv1 "github.com/countymcc/mcc/proto/mcc/sterilization/v1"
)

// Config holds the sterilization service's settings.
type Config struct {
	// ShelfLife says how long a sterile package stays usable, by packaging
	// material. It is the one place the expiry rule lives.
	ShelfLife ShelfLife
	// UTCOffset is the community's offset from UTC. It decides the local
	// day of a B-D test and of the statistics.
	UTCOffset time.Duration
}

// RegisterFlags registers the service's flags with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.ShelfLife = DefaultShelfLife()
	fs.Var(&c.ShelfLife, "sterilization.shelf-life", "shelf life of sterile packages by packaging material, as material=duration pairs (days as 14d); given pairs replace the defaults")
	fs.DurationVar(&c.UTCOffset, "sterilization.utc-offset", 8*time.Hour, "the community's offset from UTC, for the local day of B-D tests and statistics")
}

// withDefaults fills what a Config built in code left empty.
func (c Config) withDefaults() Config {
	if c.ShelfLife == nil {
		c.ShelfLife = DefaultShelfLife()
	}
	return c
}

// validate refuses a table that would make packages expire at once.
func (c Config) validate() error {
	var errs []error
	for m, d := range c.ShelfLife {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("-sterilization.shelf-life: %s must be positive", materialName(m)))
		}
	}
	if c.UTCOffset < -14*time.Hour || c.UTCOffset > 14*time.Hour {
		errs = append(errs, errors.New("-sterilization.utc-offset: must be within ±14h"))
	}
	return errors.Join(errs...)
}

// ShelfLife maps a packaging material to how long a package wrapped in it
// stays sterile. It is a flag.Value written `cotton_wrap=14d,nonwoven=180d`.
type ShelfLife map[sterilizationv1.PackagingMaterial]time.Duration

// DefaultShelfLife is WS 310's common practice: cotton wrap 14 days,
// nonwoven and paper-plastic 180 days.
func DefaultShelfLife() ShelfLife {
	const day = 24 * time.Hour
	return ShelfLife{
		sterilizationv1.PackagingMaterial_PACKAGING_MATERIAL_COTTON_WRAP:   14 * day,
		sterilizationv1.PackagingMaterial_PACKAGING_MATERIAL_NONWOVEN:      180 * day,
		sterilizationv1.PackagingMaterial_PACKAGING_MATERIAL_PAPER_PLASTIC: 180 * day,
	}
}

// String writes the table in the flag's syntax, in material order.
func (s ShelfLife) String() string {
	materials := make([]sterilizationv1.PackagingMaterial, 0, len(s))
	for m := range s {
		materials = append(materials, m)
	}
	slices.Sort(materials)
	parts := make([]string, len(materials))
	for i, m := range materials {
		parts[i] = materialName(m) + "=" + formatDays(s[m])
	}
	return strings.Join(parts, ",")
}

// Set parses `material=duration` pairs and replaces those materials.
func (s *ShelfLife) Set(v string) error {
	if *s == nil {
		*s = ShelfLife{}
	}
	for _, pair := range strings.Split(v, ",") {
		name, value, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok {
			return fmt.Errorf("%q is not material=duration", pair)
		}
		m, ok := sterilizationv1.PackagingMaterial_value["PACKAGING_MATERIAL_"+strings.ToUpper(strings.TrimSpace(name))]
		if !ok || m == 0 {
			return fmt.Errorf("unknown packaging material %q", name)
		}
		d, err := parseDays(strings.TrimSpace(value))
		if err != nil {
			return err
		}
		if d <= 0 {
			return fmt.Errorf("shelf life of %s must be positive", name)
		}
		(*s)[sterilizationv1.PackagingMaterial(m)] = d
	}
	return nil
}

func materialName(m sterilizationv1.PackagingMaterial) string {
	return strings.ToLower(strings.TrimPrefix(m.String(), "PACKAGING_MATERIAL_"))
}

// parseDays accepts a Go duration or a whole number of days, `14d`.
func parseDays(v string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(v, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil {
			return 0, fmt.Errorf("%q is not a number of days", v)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	return time.ParseDuration(v)
}

func formatDays(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	}
	return d.String()
}
