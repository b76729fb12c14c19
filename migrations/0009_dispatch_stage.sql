-- The dispatch stage (DESIGN.md §Dispatch, §Outreach): the outreach outbox its ticket
-- changes write in the same transaction, technicians' unavailability, the signals it has
-- handled (so a re-read signal acts once), and what a ticket and an incident need beyond
-- 0008. Plain tables on both storage flavours.

-- One row per message to a customer. Dispatch writes it with the change that causes it;
-- the outreach worker renders and delivers it. `idempotency_key` names the cause, so the
-- same change never queues two messages and a provider never sends one twice.
create table outreach (
    id bigint generated always as identity primary key,
    idempotency_key text not null unique,
    customer_id bigint not null references customers (id),
    ticket_id bigint references tickets (id),
    incident_id bigint references incidents (id),
    message_type text not null check (message_type in (
        'proactive_notice', 'booking_proposed', 'booking_confirmed', 'technician_en_route',
        'rescheduled', 'incident_notice', 'resolved', 'cancelled')),
    channel text not null,
    language text not null,
    -- Safety-critical (a car that must stop, a fridge losing its cold): quiet hours do not
    -- hold it back.
    urgent boolean not null default false,
    -- The facts the template renders (what was detected, the slot, the technician).
    payload jsonb not null default '{}',
    body text,
    status text not null default 'pending' check (status in ('pending', 'sending', 'sent', 'failed')),
    attempts integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    provider_response text,
    -- Event time of the change that caused it.
    event_at timestamptz not null,
    created_at timestamptz not null default now(),
    sent_at timestamptz
);
create index outreach_due on outreach (next_attempt_at) where status = 'pending';
create index outreach_ticket on outreach (ticket_id) where ticket_id is not null;

-- A technician off (sick, on leave): no visit is planned over it, and the bookings it
-- overlaps are re-planned.
create table technician_unavailability (
    id bigint generated always as identity primary key,
    technician_id integer not null references technicians (id),
    period tstzrange not null check (not isempty(period)),
    reason text not null default '',
    created_at timestamptz not null default now()
);
create index technician_unavailability_period
    on technician_unavailability using gist (technician_id, period);

-- Signals dispatch has acted on, keyed by what they are (a critical event, a device gone
-- silent at a time): read again after a crash or by a second replica, they act once.
create table dispatch_handled (
    source text not null,
    device_id integer not null,
    at timestamptz not null,
    key text not null default '',
    handled_at timestamptz not null default now(),
    primary key (source, device_id, at, key)
);

-- Where the stage has read to: predictions by `written_at` (re-read with a margin; a
-- replayed score is recognised by the streak's event time), critical events by time.
create table dispatch_progress (
    singleton boolean primary key default true check (singleton),
    predictions_written_at timestamptz,
    events_time timestamptz
);
insert into dispatch_progress default values;

-- A new ticket waits out the surge window before it is booked or its customer told, so a
-- surge is seen whole: `released_at` is when it passed that triage (null: not yet, or held
-- in an incident until a dispatcher triages it).
alter table tickets add column released_at timestamptz;
-- Where the visit goes (a car: where its last position reading put it).
alter table tickets add column site_latitude double precision;
alter table tickets add column site_longitude double precision;
create index tickets_unreleased on tickets (opened_at) where released_at is null and status = 'open';

-- What an incident spans: a model, or an area found by clustering.
alter table incidents add column model text;
alter table incidents add column first_at timestamptz;
alter table incidents add column last_at timestamptz;
alter table incidents add column triaged_at timestamptz;
alter table incidents add column triaged_by text;
create index incidents_open on incidents (failure_mode) where status = 'open';

-- A ticket no technician could take is planned again after this (event time), not every
-- cycle.
alter table tickets add column plan_after timestamptz;
-- Silence is a signal: the stage looks for devices marked stale.
create index devices_stale_since on devices (stale_since) where stale_since is not null;
