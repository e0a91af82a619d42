-- 0007: the journal of records the gateway accepted, for brokers that keep nothing across a
-- restart (the embedded Tansu of `omnichat dev`). A webhook, a human reply, a document to
-- ingest or a conversation's close/reopen is answered only once its record is here; the
-- gateway produces it afterwards, produces it again after the broker lost it, and deletes it
-- once the pipeline has carried it and everything it caused to its end (docs/ARCHITECTURE.md,
-- "The journal").
--
-- Infrastructure, not a workspace's data: no workspace_id (a raw webhook's workspace is in its
-- headers) and no updated_at (a row is written once and deleted within seconds).

CREATE TABLE journal (
    lane uuid NOT NULL,          -- the gateway process that accepted it (one per start)
    seq bigint NOT NULL,         -- its order in that process: replays go in this order
    topic text NOT NULL,
    key bytea,
    value bytea NOT NULL,
    headers bytea,               -- the record's Kafka headers, JSON [[name, latin-1 value]]
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (lane, seq)
);
