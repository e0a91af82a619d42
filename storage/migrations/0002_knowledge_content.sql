-- 0002: what document ingestion needs beyond 0001.
-- The uploaded bytes wait in the database (not on a topic: documents can be larger than a
-- record), and a chunk keeps its heading path for citations.

ALTER TABLE documents ADD COLUMN content bytea;
ALTER TABLE documents ADD COLUMN attempts integer NOT NULL DEFAULT 0;
ALTER TABLE chunks ADD COLUMN heading text;
CREATE INDEX documents_kb_status ON documents (knowledge_base_id, status);
