-- A score carries the version of the case it scored: the score of a newer
-- version of a case is never overwritten by the re-scoring of an older one.
ALTER TABLE case_score ADD COLUMN upstream_updated_at timestamptz;
