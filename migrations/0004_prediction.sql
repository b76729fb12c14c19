-- Prediction: trained models, their promotions, and the predictions live scoring writes.

-- One row per (model version, failure mode). The artifact (a JSON file under `models/`)
-- holds every mode of a version; `active` marks the version that scores a mode.
create table models (
    version text not null,
    failure_mode text not null,               -- `kind/component`
    algorithm text not null,
    horizon_hours double precision not null,
    features jsonb not null,                  -- column names, in order
    metrics jsonb not null,                   -- validation metrics (the model card's)
    threshold double precision not null,
    artifact_path text not null,
    data_from timestamptz not null,
    data_to timestamptz not null,
    active boolean not null default false,
    trained_at timestamptz not null default now(),
    primary key (version, failure_mode)
);
-- At most one active model per failure mode.
create unique index models_one_active on models (failure_mode) where active;

-- Every promotion (and the comparison that justified it).
create table model_promotions (
    id bigint generated always as identity primary key,
    time timestamptz not null default now(),
    failure_mode text not null,
    from_version text,                        -- null: the first model of this mode
    to_version text not null,
    reason text not null,
    comparison jsonb not null default '{}'
);

create table predictions (
    time timestamptz not null,                -- event time the features are "as of"
    device_id integer not null,               -- no foreign key on time series (ARCHITECTURE.md)
    failure_mode text not null,
    probability double precision not null,
    horizon interval not null,
    model_version text not null,
    above_threshold boolean not null,
    top_factors jsonb not null default '[]',
    written_at timestamptz not null default now()
);
-- Scoring the same (device, mode, as-of time) with the same model twice writes one row.
create unique index predictions_identity
    on predictions (device_id, failure_mode, time, model_version);

do $$
begin
    if (select timescaledb from forewarn_storage) then
        perform create_hypertable('predictions', 'time',
            chunk_time_interval => interval '7 days', if_not_exists => true);
    else
        create index predictions_time on predictions using brin (time);
    end if;
end
$$;
