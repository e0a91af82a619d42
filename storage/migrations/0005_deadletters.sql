-- 0005: nothing fails silently.
-- * deadletters: every record a stage gave up on, kept (the `deadletter` topic alone forgets
--   them), with what an operator needs to fix the cause and replay it.
-- * conversations.needs_attention: a conversation whose inbound message ended in a dead letter
--   waits for a person (cleared by a human reply, a PATCH, or a replay of that dead letter).
-- * agent_runs.retrieval_error: a run that answered without its knowledge says why.
-- * knowledge bases created with the `multilingual` embedder stored a model id no embedder
--   ships ('multilingual-e5-small'), so every document failed with unknown_model: they get
--   the id of the model the embedder loads, and those documents are queued again.

CREATE TABLE deadletters (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Set only when the workspace exists; unreadable webhooks may name none.
    workspace_id uuid REFERENCES workspaces (id) ON DELETE CASCADE,
    channel_id uuid REFERENCES channels (id) ON DELETE SET NULL,
    conversation_id uuid REFERENCES conversations (id) ON DELETE SET NULL,
    -- The same failed record (stage, workspace, channel, payload) is one row, however often
    -- the dead letter is delivered again or the record fails again.
    event_key text NOT NULL UNIQUE,
    stage text NOT NULL,
    reason text NOT NULL,
    error_code text,
    trace_id text NOT NULL,
    payload text NOT NULL,                    -- the failed record as the stage read it
    failures integer NOT NULL DEFAULT 1,      -- times the record failed (again after a replay)
    failed_at timestamptz NOT NULL,           -- the last failure
    replay_count integer NOT NULL DEFAULT 0,
    replayed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deadletters_workspace ON deadletters (workspace_id, created_at DESC, id DESC);
CREATE INDEX deadletters_stage ON deadletters (stage, created_at DESC, id DESC);
CREATE TRIGGER deadletters_updated_at BEFORE UPDATE ON deadletters
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

ALTER TABLE conversations
    ADD COLUMN needs_attention boolean NOT NULL DEFAULT false,
    ADD COLUMN attention_reason text,
    ADD COLUMN attention_at timestamptz,
    ADD COLUMN attention_deadletter_id uuid REFERENCES deadletters (id) ON DELETE SET NULL;
CREATE INDEX conversations_attention ON conversations (workspace_id)
    WHERE needs_attention;

ALTER TABLE agent_runs ADD COLUMN retrieval_error text;

UPDATE knowledge_bases SET embedding_model = 'multilingual-e5-small-enpt-q4'
    WHERE embedding = 'multilingual' AND embedding_model = 'multilingual-e5-small';
UPDATE documents d SET status = 'pending', error = NULL
    FROM knowledge_bases kb
    WHERE kb.id = d.knowledge_base_id AND kb.embedding = 'multilingual'
      AND d.status = 'failed' AND d.error LIKE 'unknown_model:%';
