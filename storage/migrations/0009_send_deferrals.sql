-- 0009: sends deferred for later, so that a waiting message never holds the send stream;
-- and send claims that expire.
-- A row holds one outbound message whose send must wait: a provider's Retry-After, a
-- retriable failure's backoff, a channel whose circuit breaker is open, or an earlier
-- message of its conversation that waits (a conversation's messages go out in order).
-- The message row itself stays 'pending'. A periodic sweep produces the stored request
-- to messages.send again once not_before has passed (requeued_at: when it did, so that
-- a copy produced before the latest deferral is recognised as stale and dropped).

CREATE TABLE send_deferrals (
    message_id uuid PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    channel_id uuid NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    request jsonb NOT NULL,                   -- the SendRequest to produce again
    reason text NOT NULL,                     -- our code: rate_limited, circuit_open, ...
    attempts integer NOT NULL DEFAULT 0,      -- provider calls made so far
    not_before timestamptz NOT NULL,
    requeued_at timestamptz,                  -- NULL until the sweep produces it again
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX send_deferrals_workspace ON send_deferrals (workspace_id);
CREATE INDEX send_deferrals_conversation ON send_deferrals (conversation_id);
CREATE INDEX send_deferrals_due ON send_deferrals (not_before);
CREATE INDEX send_deferrals_channel ON send_deferrals (channel_id);
CREATE TRIGGER send_deferrals_updated_at BEFORE UPDATE ON send_deferrals
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Who claimed an outbound message for sending, and when: a 'sending' message is taken over
-- only by the same worker or once the claim is older than the send stage's lease, so that
-- two workers (one still sending after a rebalance moved its partition) never send it both.
ALTER TABLE messages ADD COLUMN send_claimed_by uuid, ADD COLUMN send_claimed_at timestamptz;
