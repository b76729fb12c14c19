-- What the HTTP API and the console read (DESIGN.md §API and console).
--
-- `device_risk`: each device's newest score per failure mode, written with the
-- predictions (`Store::insert_predictions`), so the fleet-risk list reads one row per
-- device and mode instead of searching `predictions` (a hypertable of every score).
create table device_risk (
    device_id integer not null references devices (id),
    failure_mode text not null,
    time timestamptz not null,
    probability double precision not null,
    above_threshold boolean not null,
    model_version text not null,
    top_factors jsonb not null default '[]',
    primary key (device_id, failure_mode)
);
create index device_risk_probability on device_risk (probability desc, device_id);

insert into device_risk (device_id, failure_mode, time, probability, above_threshold,
                         model_version, top_factors)
select distinct on (p.device_id, p.failure_mode)
       p.device_id, p.failure_mode, p.time, p.probability, p.above_threshold,
       p.model_version, p.top_factors
from predictions p
join devices d on d.id = p.device_id
order by p.device_id, p.failure_mode, p.time desc, p.written_at desc;

-- The ticket list's filters, newest first.
create index tickets_device on tickets (device_id, id);
create index tickets_technician on tickets (technician_id, id) where technician_id is not null;
create index tickets_opened_at on tickets (opened_at);
create index bookings_ticket on bookings (ticket_id);

-- Live updates (`GET /api/v1/stream`): every change of a ticket or a booking, whoever
-- makes it (any stage, any replica), is announced on one channel after its transaction
-- commits. The payload stays far below NOTIFY's 8000-byte limit.
create function forewarn_notify_ticket() returns trigger
language plpgsql as $$
begin
    perform pg_notify('forewarn_changes', json_build_object(
        'type', 'ticket', 'id', new.id, 'status', new.status, 'kind', new.kind,
        'priority', new.priority)::text);
    return null;
end
$$;
create trigger tickets_notify after insert or update on tickets
    for each row execute function forewarn_notify_ticket();

create function forewarn_notify_booking() returns trigger
language plpgsql as $$
begin
    perform pg_notify('forewarn_changes', json_build_object(
        'type', 'booking', 'id', new.id, 'ticket_id', new.ticket_id,
        'technician_id', new.technician_id,
        'cancelled', new.cancelled_at is not null)::text);
    return null;
end
$$;
create trigger bookings_notify after insert or update on bookings
    for each row execute function forewarn_notify_booking();
