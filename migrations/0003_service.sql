-- Ground truth and the people of field service: technicians, failures, maintenance.
-- Failures and maintenance are the labels of training; the fleet simulator's history mode
-- and `forewarn import` fill them from the past, closed tickets from now on.

create table technicians (
    id integer generated always as identity primary key,
    external_id text not null unique,
    name text not null,
    email text,
    phone text,
    -- What the technician can repair: `kind/component` pairs, `kind/*` for every component.
    skills text[] not null default '{}',
    home_latitude double precision not null,
    home_longitude double precision not null,
    home_city text,
    max_travel_km double precision not null default 80,
    timezone text not null default 'UTC',
    -- Weekly shift in local time: ISO weekdays (1 = Monday) and hours.
    shift_days smallint[] not null default '{1,2,3,4,5}',
    shift_start time not null default '08:00',
    shift_end time not null default '16:00',
    active boolean not null default true,
    created_at timestamptz not null default now()
);

create table failures (
    time timestamptz not null,
    device_id integer not null references devices (id),
    component text not null,
    source text not null check (source in ('technician_confirmed', 'customer_reported', 'imported')),
    ticket_id bigint,
    created_at timestamptz not null default now()
);
create unique index failures_device_component_time on failures (device_id, component, time);

create table maintenance (
    time timestamptz not null,
    device_id integer not null references devices (id),
    component text not null,
    action text not null,                     -- replaced, repaired, inspected, cleaned
    ticket_id bigint,
    created_at timestamptz not null default now()
);
create unique index maintenance_device_component_time on maintenance (device_id, component, time);
