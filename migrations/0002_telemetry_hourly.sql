-- `telemetry_hourly`: avg, min, max, stddev and count per device, metric and hour.
-- Features over long windows read this, not raw rows.
--
-- TimescaleDB: a real-time continuous aggregate (materialized_only = false, so the newest
-- hour is computed from raw rows at query time); its refresh policy is set by
-- `store::migrate`. Plain PostgreSQL: a table of the same name and columns, refreshed by
-- `forewarn_refresh_telemetry_hourly()`, which recomputes the hours ingest marked dirty in
-- `telemetry_hourly_dirty`. After a refresh both give the same answer to the same query.

do $$
begin
    if (select timescaledb from forewarn_storage) then
        execute $sql$
            create materialized view telemetry_hourly
            with (timescaledb.continuous, timescaledb.materialized_only = false) as
            select time_bucket(interval '1 hour', time) as bucket,
                   device_id,
                   metric_id,
                   avg(value) as avg,
                   min(value) as min,
                   max(value) as max,
                   stddev(value) as stddev,
                   count(*) as count
            from telemetry
            group by bucket, device_id, metric_id
            with no data
        $sql$;
    else
        create table telemetry_hourly (
            bucket timestamptz not null,
            device_id integer not null,
            metric_id smallint not null,
            avg double precision not null,
            min double precision not null,
            max double precision not null,
            stddev double precision,          -- null for a single reading, as stddev() gives
            count bigint not null,
            primary key (device_id, metric_id, bucket)
        );
    end if;
end
$$;

-- Hours whose raw rows changed since the last refresh (plain PostgreSQL only; ingest
-- writes it in the same transaction as the rows, so a committed reading is never missed).
-- Append-only without a unique index, so concurrent writers never wait on each other for
-- the row of the current hour; the refresh deduplicates.
create table telemetry_hourly_dirty (
    bucket timestamptz not null
);

create function forewarn_refresh_telemetry_hourly() returns integer
language plpgsql as $$
declare
    buckets timestamptz[];
begin
    if (select timescaledb from forewarn_storage) then
        return 0;  -- the continuous aggregate refreshes itself
    end if;
    -- Claim the dirty hours. A writer that commits after this point marks its hour dirty
    -- again, so its rows are picked up by the next refresh.
    with claimed as (delete from telemetry_hourly_dirty returning bucket)
    select array_agg(distinct bucket) into buckets from claimed;
    if buckets is null then
        return 0;
    end if;
    delete from telemetry_hourly h using unnest(buckets) as b (bucket) where h.bucket = b.bucket;
    -- One pass over the claimed time range (the BRIN index on time bounds it), keeping the
    -- rows whose hour is dirty through a hash join. date_bin aligns hours to UTC, as
    -- time_bucket does, whatever the session's time zone.
    insert into telemetry_hourly (bucket, device_id, metric_id, avg, min, max, stddev, count)
    select b.bucket, t.device_id, t.metric_id,
           avg(t.value), min(t.value), max(t.value), stddev(t.value), count(*)
    from telemetry t
    join unnest(buckets) as b (bucket)
      on b.bucket = date_bin(interval '1 hour', t.time, timestamptz '1970-01-01 00:00:00+00')
    where t.time >= (select min(x) from unnest(buckets) x)
      and t.time < (select max(x) from unnest(buckets) x) + interval '1 hour'
    group by b.bucket, t.device_id, t.metric_id;
    return cardinality(buckets);
end
$$;
