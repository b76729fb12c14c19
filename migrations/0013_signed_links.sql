-- Signed links (DESIGN.md §Outreach): a message proposing a visit carries links to confirm
-- it, pick another time, or decline. A link is `<outreach id>-<action>-<expiry>-<HMAC>`:
-- nothing about it is stored until it is answered, and the HMAC key is either
-- `outreach.link_secret` or, when that is unset, a random key made once here and shared
-- by every replica.
create table signing_keys (
    name text primary key,
    key bytea not null check (length(key) >= 32),
    created_at timestamptz not null default now()
);

-- A message is answered once, by whichever of its links is used first: the primary key is
-- the single use, taken in the transaction that changes the ticket (a rolled-back answer
-- leaves the link usable).
create table link_answers (
    outreach_id bigint primary key references outreach (id),
    ticket_id bigint not null references tickets (id),
    action text not null check (action in ('confirm', 'reschedule', 'decline')),
    -- Event time of the answer (the fleet's clock), and the wall clock.
    at timestamptz not null,
    answered_at timestamptz not null default now(),
    -- The booking the answer made (another time), or the one it confirmed.
    booking_id bigint references bookings (id)
);
create index link_answers_ticket on link_answers (ticket_id);

-- When the customer confirmed the visit (a link, or a dispatcher on their word).
alter table bookings add column confirmed_at timestamptz;
