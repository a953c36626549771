#!/usr/bin/env bash
# Builds and runs Postern's fuzz targets (fuzz/fuzz_targets/) with cargo-fuzz
# on stable Rust (RUSTC_BOOTSTRAP=1), each with its protocol's dictionary.
# Exits non-zero if any target crashes (a panic, a failed property, a
# sanitizer report, a timeout or running out of memory).
#
#   fuzz/run.sh [SECONDS] [TARGET...]       AddressSanitizer, SECONDS per target
#                                           (default 60), all targets by default
#   fuzz/run.sh --ci [SECONDS] [TARGET...]  what tests/run runs: replay every seed
#                                           corpus once (-runs=0), then fuzz each
#                                           target SECONDS (default 15) with
#                                           -seed=1 from the seeds alone
#
# Options (before SECONDS): --sanitizer address|none (default: address; none
# with --ci), --seed N. Builds go to fuzz/target (address), fuzz/target/none
# and fuzz/target/ci-* (--ci), so that switching never rebuilds everything.
#
# Seeds are read from fuzz/corpus/TARGET and never written; what the fuzzer
# finds goes to fuzz/target/corpus/TARGET (kept between runs; --ci uses a
# fresh fuzz/target/ci-corpus/TARGET). Crashes go to fuzz/artifacts/TARGET/,
# libFuzzer's output to fuzz/target/logs/.
# Installs cargo-fuzz (cargo install cargo-fuzz --locked) when it is missing.
set -euo pipefail

FUZZ="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$FUZZ/.." && pwd)"
cd "$ROOT"

ALL_TARGETS=(smtp_command smtp_reply smtp_data imap_framing imap_command imap_response pop3 sasl config)

log() { printf 'fuzz/run.sh: %s\n' "$*" >&2; }

ci=0
sanitizer=""
seed=""
while (($#)); do
    case "$1" in
        --ci) ci=1; shift ;;
        --sanitizer) sanitizer="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) break ;;
    esac
done
if (($#)) && [[ "$1" =~ ^[0-9]+$ ]]; then
    seconds="$1"; shift
else
    seconds=$((ci ? 15 : 60))
fi
targets=("$@")
((${#targets[@]})) || targets=("${ALL_TARGETS[@]}")
if ((ci)); then
    sanitizer="${sanitizer:-none}"
    seed="${seed:-1}"
fi
sanitizer="${sanitizer:-address}"

dict_for() {
    case "$1" in
        smtp_*) echo smtp ;;
        imap_*) echo imap ;;
        pop3) echo pop3 ;;
        sasl) echo sasl ;;
        config) echo toml ;;
        *) log "unknown target $1"; exit 2 ;;
    esac
}

export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# cargo-fuzz passes nightly-only flags (-Zsanitizer, -Cpasses=sancov-module);
# RUSTC_BOOTSTRAP=1 lets the stable compiler take them.
export RUSTC_BOOTSTRAP=1
build_args=(--sanitizer "$sanitizer")
if ((ci)); then
    # The build is most of the CI step's time: 16 codegen units (cargo-fuzz
    # uses 1) build faster and fuzz as fast (measured).
    build_args+=(--codegen-units 16 --target-dir "$FUZZ/target/ci-$sanitizer")
elif [[ "$sanitizer" != address ]]; then
    build_args+=(--target-dir "$FUZZ/target/$sanitizer")
fi

start=$SECONDS
log "building ${#targets[@]} targets (sanitizer: $sanitizer)"
for t in "${targets[@]}"; do dict_for "$t" >/dev/null; done
if ((${#targets[@]} == ${#ALL_TARGETS[@]})); then
    cargo fuzz build "${build_args[@]}"
else
    for t in "${targets[@]}"; do cargo fuzz build "${build_args[@]}" "$t"; done
fi
log "built in $((SECONDS - start)) s"

# libFuzzer options for every run: a slow input (10 s) or one that needs more
# than 2 GiB is a crash; no fork/jobs, so the run stays on one core.
common=(-timeout=10 -rss_limit_mb=2048 -print_final_stats=1)

# Each run's libFuzzer output goes to fuzz/target/logs/TARGET[-replay].log
# (tens of thousands of lines); the terminal gets one summary line, or the
# end of the log on a crash.
logs="$FUZZ/target/logs"
mkdir -p "$logs"
failed=()
run() { # run TARGET LOGNAME CORPUS... -- LIBFUZZER-ARGS...
    local t="$1" name="$2" out="$logs/$2.log"
    shift 2
    if cargo fuzz run "${build_args[@]}" "$t" "$@" >"$out" 2>&1; then
        log "  $t: $(grep -E '^Done [0-9]+ runs' "$out" | tail -1); $(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' "$out" | tail -1)"
    else
        failed+=("$name")
        # The panic message (a failed property says which), libFuzzer's
        # verdict and where it wrote the input; else the end of the log.
        if grep -qE 'panicked at|ERROR: libFuzzer' "$out"; then
            { grep -A5 -m1 'panicked at' "$out"
              grep -E 'ERROR: libFuzzer|^SUMMARY|Test unit written' "$out"; } >&2
        else
            tail -n 40 "$out" >&2
        fi
        log "CRASH in $t: full log $out; input in fuzz/artifacts/$t/ (replay: RUSTC_BOOTSTRAP=1 cargo fuzz run ${build_args[*]} $t fuzz/artifacts/$t/<file>)"
    fi
}

if ((ci)); then
    # Deterministic replay of every seed: each input runs once.
    for t in "${targets[@]}"; do
        log "replaying fuzz/corpus/$t ($(find "$FUZZ/corpus/$t" -type f | wc -l) inputs)"
        run "$t" "$t-replay" "$FUZZ/corpus/$t" -- -runs=0 "${common[@]}"
    done
fi

for t in "${targets[@]}"; do
    d="$(dict_for "$t")"
    if ((ci)); then
        work="$FUZZ/target/ci-corpus/$t"
        rm -rf "$work"
    else
        work="$FUZZ/target/corpus/$t"
    fi
    mkdir -p "$work"
    args=(-dict="$FUZZ/dict/$d.dict" -max_total_time="$seconds" "${common[@]}")
    [[ -n "$seed" ]] && args+=(-seed="$seed")
    log "fuzzing $t for $seconds s"
    run "$t" "$t" "$work" "$FUZZ/corpus/$t" -- "${args[@]}"
done

log "done in $((SECONDS - start)) s"
if ((${#failed[@]})); then
    log "FAILED: ${failed[*]}"
    exit 1
fi
log "no crash in: ${targets[*]}"
