-- The plain-PostgreSQL refresh of `telemetry_hourly` (see 0002), replaced so that it reads
-- only the dirty hours and so that one series whose aggregate fails never stops the others.
--
-- Reads only dirty hours. 0002's function read every row between the oldest and the newest
-- dirty hour: one late reading 300 days old made it read 300 days of telemetry, every time.
-- This one splits the claimed hours into runs of consecutive hours and reads each run's own
-- time range (the BRIN index on `time` bounds each), so what it reads follows the dirty hours,
-- not the distance between them. A backfill of many consecutive hours is still one run, one
-- pass, as before.
--
-- Writes by primary key. Rows are upserted on `(device_id, metric_id, bucket)` instead of
-- deleting the dirty hours first: a delete by `bucket` alone had no index to use and read the
-- whole rollup on every refresh. The raw rows of a dirty hour only ever grow (retention
-- removes an hour's rollup rows with its raw rows), so an upsert leaves what the delete left.
--
-- One bad series stops nothing. avg and stddev of double precision raise 22003 (value out of
-- range: overflow) once a sum or a square leaves the double range: stddev of 1e200 and 0, or
-- avg of 1e308 and 1e308 (PostgreSQL 15). Ingest keeps values within ±ingest.max_abs_value,
-- but rows written before that limit existed, or under a looser one, may be there. When a
-- run's aggregate raises a data exception (SQLSTATE class 22), the run is computed again
-- series by series, and a series that fails again hour by hour (both through the unique index
-- on `(device_id, metric_id, time)`); an hour that cannot be aggregated has no rollup row and
-- raises a warning naming the series, the hour and the error, and every other series and hour
-- is refreshed. Any other error (connection, cancel, disk) aborts the refresh, whose
-- transaction then leaves every claimed hour dirty for the next one.
--
-- One refresh at a time: replicas each run the maintenance job, and two refreshes upserting
-- the same rows in different orders could deadlock; the second waits for the first and then
-- claims what the first left.

-- Upserts the rollup rows of one series for the hours in [first_hour, end_time). plpgsql,
-- not sql: its body is not analysed at creation, and on TimescaleDB `telemetry_hourly` is a
-- continuous aggregate that this must never write (the caller returns before).
create function forewarn_refresh_telemetry_hourly_series(
    series_device_id integer,
    series_metric_id smallint,
    first_hour timestamptz,
    end_time timestamptz
) returns void
language plpgsql as $$
begin
    insert into telemetry_hourly (bucket, device_id, metric_id, avg, min, max, stddev, count)
    select date_bin(interval '1 hour', t.time, timestamptz '1970-01-01 00:00:00+00'),
           t.device_id, t.metric_id,
           avg(t.value), min(t.value), max(t.value), stddev(t.value), count(*)
    from telemetry t
    where t.device_id = series_device_id
      and t.metric_id = series_metric_id
      and t.time >= first_hour
      and t.time < end_time
    group by 1, 2, 3
    on conflict (device_id, metric_id, bucket) do update
        set avg = excluded.avg, min = excluded.min, max = excluded.max,
            stddev = excluded.stddev, count = excluded.count;
end
$$;

create or replace function forewarn_refresh_telemetry_hourly() returns integer
language plpgsql as $$
declare
    buckets timestamptz[];
    run record;
    series record;
    hour timestamptz;
    error_text text;
begin
    if (select timescaledb from forewarn_storage) then
        return 0;  -- the continuous aggregate refreshes itself
    end if;
    perform pg_advisory_xact_lock(hashtext('forewarn_refresh_telemetry_hourly'));
    -- Claim the dirty hours. A writer that commits after this point marks its hour dirty
    -- again, so its rows are picked up by the next refresh.
    with claimed as (delete from telemetry_hourly_dirty returning bucket)
    select array_agg(distinct bucket order by bucket) into buckets from claimed;
    if buckets is null then
        return 0;
    end if;
    -- Runs of consecutive hours: within a run, an hour minus its rank is the same instant.
    for run in
        select min(u.bucket) as first_hour, max(u.bucket) + interval '1 hour' as end_time
        from unnest(buckets) with ordinality as u (bucket, rank)
        group by u.bucket - u.rank * interval '1 hour'
        order by 1
    loop
        begin
            -- date_bin aligns hours to UTC, as time_bucket does, whatever the time zone.
            insert into telemetry_hourly (bucket, device_id, metric_id, avg, min, max, stddev, count)
            select date_bin(interval '1 hour', t.time, timestamptz '1970-01-01 00:00:00+00'),
                   t.device_id, t.metric_id,
                   avg(t.value), min(t.value), max(t.value), stddev(t.value), count(*)
            from telemetry t
            where t.time >= run.first_hour and t.time < run.end_time
            group by 1, 2, 3
            on conflict (device_id, metric_id, bucket) do update
                set avg = excluded.avg, min = excluded.min, max = excluded.max,
                    stddev = excluded.stddev, count = excluded.count;
        exception when data_exception then
            for series in
                select distinct t.device_id, t.metric_id
                from telemetry t
                where t.time >= run.first_hour and t.time < run.end_time
            loop
                begin
                    perform forewarn_refresh_telemetry_hourly_series(
                        series.device_id, series.metric_id, run.first_hour, run.end_time);
                exception when data_exception then
                    for hour in
                        select distinct date_bin(interval '1 hour', t.time,
                                                 timestamptz '1970-01-01 00:00:00+00')
                        from telemetry t
                        where t.device_id = series.device_id
                          and t.metric_id = series.metric_id
                          and t.time >= run.first_hour and t.time < run.end_time
                    loop
                        begin
                            perform forewarn_refresh_telemetry_hourly_series(
                                series.device_id, series.metric_id, hour, hour + interval '1 hour');
                        exception when data_exception then
                            get stacked diagnostics error_text = message_text;
                            -- No row rather than a stale one.
                            delete from telemetry_hourly
                            where device_id = series.device_id
                              and metric_id = series.metric_id
                              and bucket = hour;
                            raise warning 'telemetry_hourly: device % metric % hour % not aggregated: %',
                                series.device_id, series.metric_id, hour, error_text;
                        end;
                    end loop;
                end;
            end loop;
        end;
    end loop;
    return cardinality(buckets);
end
$$;

-- A BRIN range filled since the last vacuum is unsummarized, and every scan reads it whatever
-- its times. Have autovacuum summarize a range as soon as inserts move on to the next one.
-- (Plain PostgreSQL only: hypertables have no such index.)
alter index if exists telemetry_time_brin set (autosummarize = on);
