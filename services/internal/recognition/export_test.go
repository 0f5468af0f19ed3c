package recognition

import "testing"

// ResultName is the name the registry gives an item of a report.
func ResultName(patient, source, issuer, report, item string) string {
	return results.Name(resultID(patient, source, issuer, report, item))
}

// SetMaxStatDecisions lowers the bound of one statistics call until the
// test ends.
func SetMaxStatDecisions(t testing.TB, n int) {
	old := maxStatDecisions
	maxStatDecisions = n
	t.Cleanup(func() { maxStatDecisions = old })
}
