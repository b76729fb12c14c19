#!/usr/bin/env bash
# Imports the Azure AI Predictive Maintenance dataset ("Microsoft Azure Predictive
# Maintenance" on Kaggle: PdM_machines.csv, PdM_telemetry.csv, PdM_errors.csv,
# PdM_maint.csv, PdM_failures.csv) from DIRECTORY into forewarn's database, as a fleet of
# kind `machine` with devices `azure-<machineID>`:
#
#   PdM_machines.csv  machineID, model, age    → device register (installed at as-of − age)
#   PdM_telemetry.csv datetime, machineID, volt, rotate, pressure, vibration → telemetry
#   PdM_errors.csv    datetime, machineID, errorID → events (code errorID, severity error)
#   PdM_maint.csv     datetime, machineID, comp    → maintenance
#   PdM_failures.csv  datetime, machineID, failure → failures (ground truth)
#
# Every step is idempotent, so the script can run again after an interruption.
#
# Untested against the real files (they are not on the development machine); the
# integration test `import::an_azure_shaped_fleet_imports_with_the_script_and_its_error_codes_become_features`
# runs it on files of the same columns and time format that it generates.
#
# Environment:
#   FOREWARN           the forewarn binary (default: `forewarn` on PATH); it reads
#                      DATABASE_URL and its configuration as usual
#   AZURE_PREFIX       device id prefix (default `azure-`)
#   AZURE_KIND         device kind (default `machine`)
#   AZURE_TIME_PATTERN strftime pattern of `datetime` (default `%Y-%m-%d %H:%M:%S`, the
#                      Kaggle files; the original gallery files write `1/1/2015 6:00:00 AM`:
#                      use `%m/%d/%Y %I:%M:%S %p`)
#   AZURE_AGE_AS_OF    the time the machines' ages refer to (default 2015-01-01T00:00:00Z,
#                      the start of the data)
#
# The data is from 2015: set `storage.retention` (FOREWARN_STORAGE__RETENTION) to `off` or
# beyond the data's age in the configuration forewarn runs with, or the retention policy
# drops it.
set -euo pipefail

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
    echo "usage: $0 DIRECTORY (holding the PdM_*.csv files)" >&2
    exit 2
fi
dir=$1
forewarn=${FOREWARN:-forewarn}
prefix=${AZURE_PREFIX:-azure-}
kind=${AZURE_KIND:-machine}
pattern=${AZURE_TIME_PATTERN:-%Y-%m-%d %H:%M:%S}
as_of=${AZURE_AGE_AS_OF:-2015-01-01T00:00:00Z}

history=(--device-column machineID --device-prefix "$prefix" --kind "$kind"
    --time-column datetime --time-format pattern --time-pattern "$pattern")

set -x
# The register first: the history files then find every machine with its model.
"$forewarn" import devices "$dir/PdM_machines.csv" --device-column machineID \
    --device-prefix "$prefix" --kind "$kind" --model-column model \
    --age-column age --age-as-of "$as_of"
"$forewarn" import telemetry "$dir/PdM_telemetry.csv" "${history[@]}" \
    --metrics volt,rotate,pressure,vibration
"$forewarn" import events "$dir/PdM_errors.csv" "${history[@]}" \
    --code-column errorID --severity error
"$forewarn" import maintenance "$dir/PdM_maint.csv" "${history[@]}" --component-column comp
"$forewarn" import failures "$dir/PdM_failures.csv" "${history[@]}" --component-column failure
