package feed

import "github.com/prometheus/client_golang/prometheus/testutil"

// Waiting reports the mcc_feed_waiting gauge: the long polls and watches
// holding a place, so tests can wait for one to be admitted instead of
// racing it.
func (s *Service) Waiting() int { return int(testutil.ToFloat64(s.metrics.waiting)) }
