-- Webhooks for other systems: subscriptions by unit, kind and severity, and a delivery log
-- that is also the retry queue and the dead-letter list.
CREATE TABLE IF NOT EXISTS webhooks (
    webhook_id uuid PRIMARY KEY,
    name text NOT NULL,
    url text NOT NULL,
    -- Signs every delivery (HMAC-SHA256); shown once when the webhook is made.
    secret text NOT NULL,
    unit_code text NOT NULL REFERENCES org_units (code),
    kinds text[] NOT NULL DEFAULT '{}',
    min_severity text NOT NULL DEFAULT 'low',
    active boolean NOT NULL DEFAULT true,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Alerts up to here have been queued for it (alerts before it existed are not sent).
    last_seq bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    delivery_id bigserial PRIMARY KEY,
    webhook_id uuid NOT NULL REFERENCES webhooks (webhook_id),
    alert_seq bigint NOT NULL,
    alert_id uuid NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    leased_until timestamptz,
    last_status integer,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    UNIQUE (webhook_id, alert_seq)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_log ON webhook_deliveries (webhook_id, delivery_id DESC);
