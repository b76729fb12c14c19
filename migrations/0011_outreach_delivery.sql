-- Delivering the outreach outbox (DESIGN.md §Outreach): a worker claims due rows for a
-- lease (`FOR UPDATE SKIP LOCKED`, fenced by `claim_token`), sends, and writes the outcome
-- only while its claim holds; a row whose lease ran out (its worker died, perhaps after
-- sending) is claimed again and sent with the same idempotency key, which the providers
-- and our adapters dedupe on.
alter table outreach add column claim_token bigint;
alter table outreach add column claimed_until timestamptz;
-- Failed attempts on the current channel (the next channel is tried after
-- outreach.fallback_after) and the channels given up on, in order.
alter table outreach add column channel_attempts integer not null default 0;
alter table outreach add column channels_tried text[] not null default '{}';
alter table outreach add column subject text;
-- Why the last attempt failed; for a `failed` row, why it was given up.
alter table outreach add column last_error text;
create index outreach_claimed on outreach (claimed_until) where status = 'sending';

-- Every attempt whose outcome was written: what was sent where and what the provider said.
create table outreach_attempts (
    id bigint generated always as identity primary key,
    outreach_id bigint not null references outreach (id),
    at timestamptz not null default now(),
    channel text not null,
    -- sent, retry (a transient failure), rejected (a permanent one), deferred (quiet
    -- hours), failed (given up)
    outcome text not null,
    detail text
);
create index outreach_attempts_message on outreach_attempts (outreach_id);
