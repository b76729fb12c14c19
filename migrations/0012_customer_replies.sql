-- What customers write back that is not a link click (DESIGN.md §Outreach): an SMS or an
-- email reply the provider's inbound webhook delivers. Threaded onto its ticket by the
-- reference the message carried (FW-<ticket>, FW-I<incident>), else by the sender's
-- address; queued for dispatchers who speak the customer's language in their area. Nothing
-- is dropped: a reply that threads onto nothing is kept in the queue `und/unknown`.
create table customer_replies (
    id bigint generated always as identity primary key,
    -- The provider's id of the message: a webhook delivered twice stores one reply.
    provider_id text not null unique,
    channel text not null check (channel in ('sms', 'email', 'push', 'webhook')),
    sender text not null,
    subject text,
    body text not null,
    customer_id bigint references customers (id),
    ticket_id bigint references tickets (id),
    incident_id bigint references incidents (id),
    -- How it was threaded: reference, sender or none.
    threaded_by text not null check (threaded_by in ('reference', 'sender', 'none')),
    -- `<language>/<area>`: the customer's language (primary subtag) and city (else
    -- country); `und/unknown` for a sender nobody knows.
    queue text not null,
    received_at timestamptz not null default now(),
    -- The first answer a dispatcher gave: time to first response is this minus received_at.
    first_response_at timestamptz,
    responded_by text
);
create index customer_replies_waiting on customer_replies (queue, received_at)
    where first_response_at is null;
create index customer_replies_ticket on customer_replies (ticket_id) where ticket_id is not null;
