package recognition

// ResultName is the name the registry gives an item of a report.
func ResultName(patient, source, issuer, report, item string) string {
	return results.Name(resultID(patient, source, issuer, report, item))
}
