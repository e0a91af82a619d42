-- 0001: the whole platform's schema.
-- Every row a workspace owns has workspace_id (FK + index). UUID keys, UTC timestamps.
-- Unique constraints carry the idempotency the stream relies on.

CREATE EXTENSION IF NOT EXISTS vector;

CREATE OR REPLACE FUNCTION set_updated_at() RETURNS trigger AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TABLE plans (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    code text NOT NULL UNIQUE,
    name text NOT NULL,
    monthly_inbound_messages bigint,          -- NULL: unlimited
    monthly_llm_tokens bigint,                -- NULL: unlimited
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO plans (code, name, monthly_inbound_messages, monthly_llm_tokens) VALUES
    ('free', 'Free', 1000, 200000),
    ('pro', 'Pro', 100000, 20000000),
    ('enterprise', 'Enterprise', NULL, NULL);

CREATE TABLE workspaces (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    plan text NOT NULL DEFAULT 'free' REFERENCES plans (code),
    is_active boolean NOT NULL DEFAULT true,
    fallback_text text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE memberships (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    email text NOT NULL,
    role text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX memberships_workspace_email ON memberships (workspace_id, lower(email));

CREATE TABLE api_keys (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name text NOT NULL,
    prefix text NOT NULL UNIQUE,              -- shown to users, e.g. "ok_3f9a1c2b"
    key_hash text NOT NULL UNIQUE,            -- sha256 hex of the whole key; the key is never stored
    scopes text[] NOT NULL CHECK (scopes <@ ARRAY['admin', 'read']::text[] AND cardinality(scopes) > 0),
    expires_at timestamptz,
    revoked_at timestamptz,
    last_used_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_workspace ON api_keys (workspace_id);

CREATE TABLE agents (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name text NOT NULL,
    description text,
    published_version_id uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agents_workspace ON agents (workspace_id);

CREATE TABLE agent_versions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    agent_id uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    number integer NOT NULL,
    status text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'published')),
    system_prompt text NOT NULL,
    model text,
    temperature double precision NOT NULL DEFAULT 0.2,
    max_tokens integer NOT NULL DEFAULT 512,
    history_tokens integer NOT NULL DEFAULT 2000,
    fallback_text text,
    knowledge_base_ids uuid[] NOT NULL DEFAULT '{}',
    published_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (agent_id, number)
);
CREATE INDEX agent_versions_workspace ON agent_versions (workspace_id);
ALTER TABLE agents ADD CONSTRAINT agents_published_version_fk
    FOREIGN KEY (published_version_id) REFERENCES agent_versions (id) ON DELETE SET NULL;

CREATE TABLE channels (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name text NOT NULL,
    provider text NOT NULL CHECK (provider IN ('whatsapp_cloud', 'evolution', 'sandbox')),
    config jsonb NOT NULL DEFAULT '{}',       -- non-secret fields only
    secrets bytea,                            -- Fernet-encrypted JSON of the secret fields
    agent_id uuid REFERENCES agents (id) ON DELETE SET NULL,
    is_active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX channels_workspace ON channels (workspace_id);

CREATE TABLE contacts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    channel_id uuid NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    external_id text NOT NULL,
    alt_ids text[] NOT NULL DEFAULT '{}',     -- other identifiers of the same person
    phone text,                               -- may be unknown (username-only users)
    name text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (channel_id, external_id)
);
CREATE INDEX contacts_workspace ON contacts (workspace_id);
CREATE INDEX contacts_alt_ids ON contacts USING gin (alt_ids);

CREATE TABLE conversations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    channel_id uuid NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    contact_id uuid NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    mode text NOT NULL DEFAULT 'bot' CHECK (mode IN ('bot', 'human')),
    human_until timestamptz,                  -- human takeover from the phone expires here
    last_message_at timestamptz,
    last_inbound_at timestamptz,              -- start of WhatsApp's 24-hour window
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_workspace ON conversations (workspace_id, last_message_at DESC);
CREATE UNIQUE INDEX conversations_one_open ON conversations (channel_id, contact_id)
    WHERE status = 'open';

CREATE TABLE messages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    channel_id uuid NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    direction text NOT NULL CHECK (direction IN ('in', 'out')),
    author text NOT NULL CHECK (author IN ('contact', 'bot', 'human')),
    type text NOT NULL,
    text text,
    payload jsonb,
    status text NOT NULL DEFAULT 'received',
    status_rank integer NOT NULL DEFAULT 0,
    error_code text,
    error_message text,
    provider_message_id text,
    in_reply_to uuid REFERENCES messages (id) ON DELETE SET NULL,
    trace_id text NOT NULL,
    sent_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_workspace ON messages (workspace_id);
CREATE INDEX messages_conversation ON messages (conversation_id, created_at);
-- A replayed webhook writes nothing twice.
CREATE UNIQUE INDEX messages_provider_id ON messages (channel_id, provider_message_id)
    WHERE provider_message_id IS NOT NULL;
-- Exactly one bot reply per inbound message: the outbound idempotency key.
CREATE UNIQUE INDEX messages_one_bot_reply ON messages (in_reply_to)
    WHERE direction = 'out' AND author = 'bot';

CREATE TABLE knowledge_bases (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name text NOT NULL,
    language text NOT NULL DEFAULT 'pt',
    embedding text NOT NULL DEFAULT 'local',
    embedding_model text NOT NULL,
    dimensions integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX knowledge_bases_workspace ON knowledge_bases (workspace_id);

CREATE TABLE documents (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    knowledge_base_id uuid NOT NULL REFERENCES knowledge_bases (id) ON DELETE CASCADE,
    title text NOT NULL,
    filename text,
    mime_type text,
    content_hash text NOT NULL,
    size_bytes bigint NOT NULL DEFAULT 0,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'processing', 'ready', 'failed')),
    error text,
    chunk_count integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (knowledge_base_id, content_hash)
);
CREATE INDEX documents_workspace ON documents (workspace_id);

CREATE TABLE chunks (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    knowledge_base_id uuid NOT NULL REFERENCES knowledge_bases (id) ON DELETE CASCADE,
    document_id uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    position integer NOT NULL,
    text text NOT NULL,
    tokens integer NOT NULL,
    dimensions integer NOT NULL,
    embedding vector NOT NULL,
    tsv tsvector NOT NULL,                    -- in the knowledge base's language
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (document_id, position)
);
CREATE INDEX chunks_workspace ON chunks (workspace_id, knowledge_base_id);
CREATE INDEX chunks_tsv ON chunks USING gin (tsv);
-- HNSW needs a fixed dimension: one partial index per dimension our embedders produce.
CREATE INDEX chunks_embedding_384 ON chunks
    USING hnsw ((embedding::vector(384)) vector_cosine_ops) WHERE dimensions = 384;
CREATE INDEX chunks_embedding_1536 ON chunks
    USING hnsw ((embedding::vector(1536)) vector_cosine_ops) WHERE dimensions = 1536;

CREATE TABLE agent_runs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    agent_id uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    version_id uuid NOT NULL REFERENCES agent_versions (id) ON DELETE CASCADE,
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    message_id uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    model text NOT NULL,
    prompt_tokens integer NOT NULL DEFAULT 0,
    completion_tokens integer NOT NULL DEFAULT 0,
    latency_ms integer NOT NULL DEFAULT 0,
    cost_usd numeric(12, 6) NOT NULL DEFAULT 0,
    sources jsonb NOT NULL DEFAULT '[]',
    outcome text NOT NULL,
    error text,
    reply_text text,
    trace_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (message_id)                       -- one run per inbound message, even on retry
);
CREATE INDEX agent_runs_workspace ON agent_runs (workspace_id, agent_id, created_at);

CREATE TABLE webhook_events (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    channel_id uuid NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    provider text NOT NULL,
    idempotency_key text NOT NULL,
    raw_payload jsonb NOT NULL,
    raw_headers jsonb NOT NULL,               -- never a secret: no signature, token or key
    normalized jsonb,
    trace_id text NOT NULL,
    received_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, idempotency_key)
);
CREATE INDEX webhook_events_channel ON webhook_events (channel_id, received_at);

CREATE TABLE usage_records (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    day date NOT NULL,
    inbound_messages bigint NOT NULL DEFAULT 0,
    outbound_messages bigint NOT NULL DEFAULT 0,
    llm_prompt_tokens bigint NOT NULL DEFAULT 0,
    llm_completion_tokens bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, day)
);

CREATE TABLE quotas (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    metric text NOT NULL CHECK (metric IN ('inbound_messages', 'llm_tokens')),
    monthly_limit bigint,                     -- overrides the plan's; NULL: unlimited
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, metric)
);

CREATE TABLE audit_log (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    actor text NOT NULL,                      -- api key id, 'platform_admin' or 'system:<stage>'
    action text NOT NULL,
    object_type text NOT NULL,
    object_id text,
    details jsonb NOT NULL DEFAULT '{}',
    event_key text,                           -- stream-emitted rows: replay writes once
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_workspace ON audit_log (workspace_id, created_at DESC, id DESC);
CREATE UNIQUE INDEX audit_log_event_key ON audit_log (workspace_id, event_key)
    WHERE event_key IS NOT NULL;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['plans', 'workspaces', 'memberships', 'api_keys', 'agents',
        'agent_versions', 'channels', 'contacts', 'conversations', 'messages',
        'knowledge_bases', 'documents', 'chunks', 'agent_runs', 'webhook_events',
        'usage_records', 'quotas', 'audit_log']
    LOOP
        EXECUTE format('CREATE TRIGGER %I_updated_at BEFORE UPDATE ON %I '
                       'FOR EACH ROW EXECUTE FUNCTION set_updated_at()', t, t);
    END LOOP;
END $$;
