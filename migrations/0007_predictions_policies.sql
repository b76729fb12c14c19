-- Predictions grow with the fleet and the scoring interval like telemetry does: on
-- TimescaleDB they are compressed and dropped by the same settings (`storage.compress_after`,
-- `storage.retention`; policies set by `store::migrate`), on plain PostgreSQL deleted past
-- `storage.retention` by the maintenance job. The unique index's columns must be segments
-- or ordering columns of the compressed form.
do $$
begin
    if (select timescaledb from forewarn_storage) then
        alter table predictions set (
            timescaledb.compress,
            timescaledb.compress_segmentby = 'device_id, failure_mode',
            timescaledb.compress_orderby = 'time, model_version'
        );
    end if;
end
$$;
