-- Offset epochs. Within an epoch a stored offset never goes backwards (the
-- sink's upsert only moves it forward). A reset (`vigie offsets reset`)
-- moves a partition's offset anywhere and starts a new epoch: a member that
-- read the offsets of an older epoch, and still holds a batch, finds the
-- epoch changed, writes nothing and reads the offsets again.
ALTER TABLE sink_offsets ADD COLUMN epoch bigint NOT NULL DEFAULT 0;
