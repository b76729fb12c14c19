-- The spine: customers, devices, the metric catalogue, time series, dead letters.
--
-- TimescaleDB-aware. The migration connection sets `forewarn.timescaledb` to `auto`,
-- `require` or `off` (storage.timescaledb). When the extension is used, `telemetry` and
-- `device_events` become hypertables and `telemetry_hourly` a continuous aggregate (see
-- 0002); without it the same names are plain tables and forewarn refreshes the rollup itself.
-- Policies whose values come from configuration (compression, retention) are applied by
-- `store::migrate` after the migrations, since they change without a schema change.

do $$
declare
    mode text := coalesce(nullif(current_setting('forewarn.timescaledb', true), ''), 'auto');
    available boolean := exists (select 1 from pg_available_extensions where name = 'timescaledb');
begin
    if mode = 'require' and not available then
        raise exception 'storage.timescaledb = require, but the timescaledb extension is not available on this server';
    end if;
    if mode <> 'off' and available then
        create extension if not exists timescaledb;
    end if;
end
$$;

-- Records which storage flavour this database was created with, so every later step
-- (and every replica) agrees without re-detecting.
create table forewarn_storage (
    singleton boolean primary key default true check (singleton),
    timescaledb boolean not null,
    created_at timestamptz not null default now()
);
insert into forewarn_storage (timescaledb)
select exists (select 1 from pg_extension where extname = 'timescaledb')
   and coalesce(nullif(current_setting('forewarn.timescaledb', true), ''), 'auto') <> 'off';

create table customers (
    id bigint generated always as identity primary key,
    external_id text unique,
    name text not null default '',
    email text,
    phone text,
    preferred_channel text not null default 'email'
        check (preferred_channel in ('email', 'sms', 'push', 'webhook')),
    language text not null default 'en',      -- BCP 47
    timezone text not null default 'UTC',     -- IANA name
    quiet_hours_start time,                   -- local time in `timezone`
    quiet_hours_end time,
    tier text not null default 'standard',
    address text,
    city text,
    country text,                             -- ISO 3166-1 alpha-2
    created_at timestamptz not null default now()
);

create table devices (
    -- Surrogate key used in every time-series table: an integer in the unique index
    -- keeps COPY about a third faster than the text external id would.
    id integer generated always as identity primary key,
    external_id text not null unique check (external_id ~ '^[A-Za-z0-9_.:-]{1,64}$'),
    kind text not null default 'unknown',
    model text,
    customer_id bigint references customers (id),
    latitude double precision,
    longitude double precision,
    installed_at timestamptz,
    last_seen_at timestamptz,                 -- newest data time (event time), or status receipt
    online boolean,                           -- from the retained status topic / last will
    status_changed_at timestamptz,            -- wall-clock time of the last status message
    registered_by text not null default 'import' check (registered_by in ('import', 'auto', 'api')),
    metadata jsonb not null default '{}',
    created_at timestamptz not null default now()
);
create index devices_customer_id on devices (customer_id);

create table metrics (
    id smallint generated always as identity primary key,
    name text not null unique check (name ~ '^[a-z0-9_]{1,64}$'),
    unit text,
    device_kinds text[] not null default '{}',
    created_at timestamptz not null default now()
);

-- No foreign keys on the time series: they would cost a lookup per row on the hot path,
-- and ingest only ever writes ids it resolved from `devices` and `metrics`.
create table telemetry (
    time timestamptz not null,
    device_id integer not null,
    metric_id smallint not null,
    value double precision not null,
    time_estimated boolean not null default false  -- payload had no ts: receive time used
);
-- Idempotence: a redelivered message inserts nothing.
create unique index telemetry_device_metric_time on telemetry (device_id, metric_id, time);

create table device_events (
    time timestamptz not null,
    device_id integer not null,
    code text not null,
    severity text not null check (severity in ('info', 'warning', 'error', 'critical')),
    message text not null default '',
    time_estimated boolean not null default false
);
create unique index device_events_device_time_code on device_events (device_id, time, code);

create table dead_letters (
    id bigint generated always as identity primary key,
    received_at timestamptz not null default now(),
    topic text not null,
    payload bytea not null,                   -- raw bytes as received (capped, see `truncated`)
    truncated boolean not null default false,
    reason text not null,
    detail text not null default ''
);
create index dead_letters_received_at on dead_letters (received_at);
create index dead_letters_reason on dead_letters (reason, received_at);

do $$
begin
    if (select timescaledb from forewarn_storage) then
        perform create_hypertable('telemetry', 'time',
            chunk_time_interval => interval '1 day', if_not_exists => true);
        perform create_hypertable('device_events', 'time',
            chunk_time_interval => interval '7 days', if_not_exists => true);
        alter table telemetry set (
            timescaledb.compress,
            timescaledb.compress_segmentby = 'device_id, metric_id',
            timescaledb.compress_orderby = 'time'
        );
    else
        -- Time-range scans (rollup refresh, retention) on plain PostgreSQL. BRIN: tiny, and
        -- nearly free on the insert path, since rows arrive roughly in time order.
        -- (Hypertables get their own time index.)
        create index telemetry_time_brin on telemetry using brin (time);
        create index device_events_time_brin on device_events using brin (time);
    end if;
end
$$;
