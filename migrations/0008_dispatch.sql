-- Dispatch (DESIGN.md §Dispatch): tickets and their audit, technicians' bookings,
-- incidents, and the streak the ticket policy keeps between scores. Times are event time
-- (DESIGN.md §Time) except `written_at` and `updated_at`, which are the wall clock.
-- Plain tables on both storage flavours.

-- `technician_id WITH =` in a GiST exclusion constraint needs btree_gist (contrib).
create extension if not exists btree_gist;

create table incidents (
    id bigint generated always as identity primary key,
    -- The failure mode the devices raised, or `silence` (a power cut, a network outage).
    failure_mode text not null,
    status text not null default 'open' check (status in ('open', 'triaged', 'resolved')),
    opened_at timestamptz not null,
    center_latitude double precision,
    center_longitude double precision,
    radius_km double precision,
    device_count integer not null default 0,
    written_at timestamptz not null default now()
);

create table tickets (
    id bigint generated always as identity primary key,
    kind text not null check (kind in ('proactive', 'reactive', 'incident')),
    status text not null default 'open' check (
        status in ('open', 'booked', 'en_route', 'on_site', 'resolved', 'closed', 'cancelled')
    ),
    -- 1 is the most urgent.
    priority smallint not null check (priority between 1 and 4),
    device_id integer not null references devices (id),
    failure_mode text not null,
    incident_id bigint references incidents (id),
    -- The signal that opened it: when, how likely, by which model, in words.
    opened_at timestamptz not null,
    risk_at_opening double precision,
    model_version text,
    top_factors jsonb not null default '[]',
    -- Repeat occurrences while it is open: kept here, never a second ticket.
    occurrences integer not null default 1 check (occurrences >= 1),
    first_seen_at timestamptz not null,
    last_seen_at timestamptz not null,
    highest_risk double precision,
    expected_failure_at timestamptz,
    due_at timestamptz,
    technician_id integer references technicians (id),
    outcome text check (outcome in ('fault_confirmed', 'no_fault_found', 'customer_declined')),
    outcome_component text,
    resolved_at timestamptz,
    written_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
-- At most one open ticket per (device, failure mode), whatever runs concurrently.
create unique index tickets_one_open_per_device_mode on tickets (device_id, failure_mode)
    where status in ('open', 'booked', 'en_route', 'on_site');
create index tickets_status_priority on tickets (status, priority);
-- The cool-down lookup of the ticket policy: the last faultless visit of a device and mode.
create index tickets_no_fault_found on tickets (device_id, failure_mode, resolved_at)
    where outcome = 'no_fault_found';
create index tickets_incident on tickets (incident_id) where incident_id is not null;

-- Append-only audit: every change of a ticket, who made it, when and why.
create table ticket_events (
    id bigint generated always as identity primary key,
    ticket_id bigint not null references tickets (id),
    at timestamptz not null,
    actor text not null,
    from_status text,
    to_status text not null,
    reason text not null,
    detail jsonb not null default '{}',
    written_at timestamptz not null default now()
);
create index ticket_events_ticket on ticket_events (ticket_id, id);

create table bookings (
    id bigint generated always as identity primary key,
    ticket_id bigint not null references tickets (id),
    technician_id integer not null references technicians (id),
    slot tstzrange not null check (not isempty(slot)),
    cancelled_at timestamptz,
    written_at timestamptz not null default now(),
    -- Double booking is impossible: the database, not the code, is the last word.
    constraint bookings_no_double_booking
        exclude using gist (technician_id with =, slot with &&) where (cancelled_at is null)
);
-- A ticket has at most one live booking (two replicas cannot book it twice).
create unique index bookings_one_live_per_ticket on bookings (ticket_id) where cancelled_at is null;

-- The ticket policy's streak per (device, failure mode) between scores (dispatch::policy).
create table dispatch_streaks (
    device_id integer not null,
    failure_mode text not null,
    count integer not null default 0,
    -- The count is of scores below the close threshold (a ticket open), else above the
    -- open threshold.
    closing boolean not null default false,
    -- The first score of the current run above the open threshold.
    above_since timestamptz,
    last_time timestamptz,
    primary key (device_id, failure_mode)
);
