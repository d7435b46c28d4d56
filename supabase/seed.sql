-- Local seed data for `supabase start`. keapsync needs none: accounts are
-- created by the OAuth flow (make demo shows it against the fake Keap).
SELECT 1;
