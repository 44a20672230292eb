-- Dead letters of the PostgreSQL sink, written in the same transaction as
-- the rows and offsets of their batch, then published to the DLQ topic and
-- deleted. A letter is named by its group and its record's origin: a crash
-- between the commit and the publish publishes it after the restart, once
-- (the consumer reads the DLQ topic for letters it already published).
CREATE TABLE dlq_outbox (
    consumer_group   text        NOT NULL,
    origin_topic     text        NOT NULL,
    origin_partition integer     NOT NULL,
    origin_offset    bigint      NOT NULL,
    dlq_topic        text        NOT NULL,
    key              bytea,
    value            bytea       NOT NULL,
    -- The headers, each as a 4-byte big-endian key length, the key, a
    -- 4-byte value length and the value.
    headers          bytea       NOT NULL,
    timestamp_ms     bigint,
    stored_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, origin_topic, origin_partition, origin_offset)
);
