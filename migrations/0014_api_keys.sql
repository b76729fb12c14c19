-- API keys (DESIGN.md §API and console): a caller of `/api/v1` presents a key; only its
-- SHA-256 is kept (a key is 256 random bits, so a fast hash is enough), the key itself is
-- shown once when it is made. A technician's key is bound to that technician: it sees and
-- changes only their jobs.
create table api_keys (
    id bigint generated always as identity primary key,
    name text not null,
    role text not null check (role in ('admin', 'dispatcher', 'technician', 'integration')),
    technician_id integer references technicians (id),
    -- The first characters of the key, to tell keys apart in a list.
    prefix text not null,
    hash bytea not null unique check (length(hash) = 32),
    created_at timestamptz not null default now(),
    created_by text not null default '',
    revoked_at timestamptz,
    last_used_at timestamptz,
    check ((role = 'technician') = (technician_id is not null))
);
