package feed

// Waiting reports how many long polls and watches hold a place under
// Config.MaxWaiting, so tests can wait for one to be admitted instead of
// racing it.
func (s *Service) Waiting() int { return len(s.waiting) }
