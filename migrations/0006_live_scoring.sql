-- Live scoring (issue 9): stale devices, and a rollup index for the scorer's lookback.

-- When a device went silent: the end of its newest hour of telemetry, set by the predict
-- stage when the device has sent no telemetry within the staleness window that training
-- requires of an example (`FeatureSpec::hourly_staleness_hours` before the fleet's newest
-- hour), and cleared when its telemetry returns. Events and status do not count: they move
-- `last_seen_at`, but a model scores telemetry. Null: reporting (or never reported).
alter table devices add column stale_since timestamptz;

-- The scorer reads the newest hours of every device of a kind (its lookback) and the newest
-- hour of the fleet. The primary key starts with the device, so on plain PostgreSQL those
-- reads scanned the whole rollup; the rollup is written in time order, so a BRIN index on
-- `bucket` bounds them to the pages of the newest hours. (On TimescaleDB the continuous
-- aggregate is chunked by `bucket` already.)
do $$
begin
    if not (select timescaledb from forewarn_storage) then
        create index telemetry_hourly_bucket_brin on telemetry_hourly using brin (bucket);
    end if;
end
$$;
