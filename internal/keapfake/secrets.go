package keapfake

// IssuedSecrets returns every access token, refresh token and authorization
// code the fake has ever issued, used or not, so tests can assert that none
// of them leaks into logs, errors or the database in clear.
func (s *Server) IssuedSecrets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.access)+len(s.refresh)+len(s.codes))
	for k := range s.access {
		out = append(out, k)
	}
	for k := range s.refresh {
		out = append(out, k)
	}
	for k := range s.codes {
		out = append(out, k)
	}
	return out
}
