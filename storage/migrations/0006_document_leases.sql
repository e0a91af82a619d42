-- 0006: bounded ingestion. A claim on a document records who holds it and until when: the
-- holder renews its lease while it works, the sweep re-queues a processing document only once
-- its lease has run out, and a claim never takes a document another worker holds.
-- documents.attempts (0002) counts the claims that ended without an outcome (a worker that
-- died, froze or failed on it); at OMNICHAT_INGEST_MAX_ATTEMPTS the document is failed.

ALTER TABLE documents ADD COLUMN claimed_by text;
ALTER TABLE documents ADD COLUMN claimed_at timestamptz;
ALTER TABLE documents ADD COLUMN lease_until timestamptz;
-- What the sweep reads: the few documents waiting, oldest first.
CREATE INDEX documents_waiting ON documents (created_at) WHERE status IN ('pending', 'processing');
