package store

// QueriesForTest exposes the parsed queries to tests.
func QueriesForTest(s *Store) map[string]string { return s.q }
