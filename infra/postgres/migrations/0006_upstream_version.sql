-- The upstream's version of a case (SODA's `:updated_at`, the envelope's
-- `upstream_updated_at`): per event id, the version with the latest
-- upstream_updated_at is kept, then the latest ingested_at. Rows stored
-- before it have none, and sort before every versioned one.
ALTER TABLE health_case ADD COLUMN upstream_updated_at timestamptz;
