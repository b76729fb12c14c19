#!/usr/bin/env bash
# Fuzzes the MQTT contract's parsers for a bounded time; .ci/run calls it. Fails loudly on
# a crash (a panic, a broken rule, a sanitizer report), naming the input and how to replay it.
#
#   FUZZ_SECONDS     seconds of fuzzing across all targets, split evenly (default 60); the
#                    build comes on top (first build about a minute, then seconds)
#   FUZZ_TARGETS     the targets to run, space-separated (default: every one in fuzz_targets/)
#   FUZZ_TARGET_DIR  cargo's target directory (default /var/tmp/forewarn-fuzz-target, apart
#                    from the main build's: these are built with other flags)
#
# Each target starts from the hostile corpus (tests/hostile/) and from what earlier runs
# found (fuzz/corpus/<target>, kept out of git).
set -euo pipefail
cd "$(dirname "$0")"

export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/var/tmp/forewarn-fuzz-target}"
# cargo-fuzz passes nightly flags (-Zsanitizer=address, …); the stable toolchain takes them
# with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

read -r -a targets <<<"${FUZZ_TARGETS:-$(cargo fuzz list | tr '\n' ' ')}"
seconds="${FUZZ_SECONDS:-60}"
per_target=$((seconds / ${#targets[@]}))
((per_target >= 1)) || per_target=1

started=$SECONDS
cargo fuzz build
echo "fuzz targets built in $((SECONDS - started)) s"

for target in "${targets[@]}"; do
    case "$target" in
        json) seeds=(../tests/hostile/telemetry ../tests/hostile/events ../tests/hostile/status)
              extra=(-dict=json.dict) ;;
        sparkplug) seeds=(../tests/hostile/sparkplug); extra=() ;;
        *) seeds=(../tests/hostile); extra=() ;;
    esac
    mkdir -p "corpus/$target"
    echo "=== fuzz $target for ${per_target} s"
    # Inputs up to the default ingest.max_payload_bytes (64 KiB); longer seeds are cut.
    if ! cargo fuzz run "$target" "corpus/$target" "${seeds[@]}" -- \
        -max_total_time="$per_target" -max_len=65536 -timeout=10 \
        -print_final_stats=1 "${extra[@]}"; then
        echo "FUZZ CRASH in target $target: the input is in fuzz/artifacts/$target/" >&2
        ls -l "artifacts/$target" >&2 || true
        echo "replay: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $target artifacts/$target/…" >&2
        exit 1
    fi
done
