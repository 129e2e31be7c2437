#!/usr/bin/env bash
# Issue J in ONE device call: the paper's regime (T5 1.1 XXL/XL/large targets, small/base drafts,
# simulated α) and the launch-overhead knobs, timed on a lent GPU. Written for the workplace's
# lease of one H100/H200 (15 minutes in all, at most 10 per command): run it as one command
# with a 600 s limit; it stops itself after BUDGET_S (540 s) and writes everything under $OUT
# as it goes (each phase: results.jsonl, table.md, summary.md, its log), then $OUT/SUMMARY.md.
#
#   SPECDEC_COMMIT=$(git rev-parse HEAD) OUT=/tmp/out bash scripts/gpu_paper_regime.sh
#
# Phases (budgets overridable through the environment; each is scripts/paper_regime.py under
# `timeout`, its own --time_budget_s a little shorter, so a phase that runs long loses only its
# unfinished unit):
#   1. main (MAIN_S=290 s): XLA's default flags; XXL with the small draft at batch 1 for γ = 7, 5,
#      3 first, then the base draft, batch 8, the rest of v(γ), XL, large (as far as it gets);
#   2. cmdbuf (CMDBUF_S=150 s): XXL/small, batch 1, γ = 7 then 5, with
#      --xla_gpu_enable_command_buffer=$CMDBUF (default +WHILE,+CONDITIONAL: the whole decode
#      loop as CUDA graphs, no host round trip per iteration);
#   3. the shipped EN→DE pair (PAIR_S=40 s each): c and speedup at XLA's defaults, with $CMDBUF,
#      and with the draft's scan unrolled (DRAFT_UNROLL=8) if speculative_generate takes
#      draft_unroll: c of the shipped draft before/after the launch-overhead knobs.
# Every phase reruns its greedy outputs against generate's (--check_parity, on by default).
#
# Expected on an H100 (estimates; results.jsonl has the measured times): phase 1 spends ~40 s on
# XXL init, ~10–25 s per XXL program compile (9 programs for the first three rows), ~1 s per
# timed setting: the XXL/small rows after ~2–4 min, XXL/base after ~1 more; phase 2 needs ~2 min
# for its first row (init and compiles again: a new process); each pair probe ~30 s.
#
# CPU dry run of the plumbing (tiny stand-in models, a few minutes on 2 cores):
#   JAX_PLATFORMS=cpu EXTRA_ARGS="--tiny --max_decode_len=8 --input_length=4 --repeats=1 \
#     --timing_repeats=2" BUDGET_S=300 MAIN_S=120 CMDBUF_S=60 PAIR_S=40 OUT=/tmp/o \
#     bash scripts/gpu_paper_regime.sh
set -u -o pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
: "${OUT:?set OUT to the output folder}"
PY=${PY:-python3}
BUDGET_S=${BUDGET_S:-540}
MAIN_S=${MAIN_S:-290}
CMDBUF_S=${CMDBUF_S:-150}
PAIR_S=${PAIR_S:-40}
CMDBUF=${CMDBUF:-+WHILE,+CONDITIONAL}
DRAFT_UNROLL=${DRAFT_UNROLL:-8}
EXTRA_ARGS=${EXTRA_ARGS:-}
SUMMARY_S=10  # Kept back for the final summaries.
T0=$(date +%s)
mkdir -p "$OUT"
LOG=$OUT/driver.log
export XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=3 PYTHONUNBUFFERED=1
export JAX_PLATFORMS=${JAX_PLATFORMS:-cuda}
export SPECDEC_COMMIT=${SPECDEC_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}

say() { echo "[$(($(date +%s) - T0))s] $*" | tee -a "$LOG"; }
left() { echo $((T0 + BUDGET_S - $(date +%s))); }
gpu_memory() { (nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader || true) 2>/dev/null; }

# phase NAME SECONDS_WANTED SECONDS_KEPT_FOR_LATER_PHASES FLAGS...
phase() {
  local name=$1 want=$2 keep=$3
  shift 3
  local s=$(($(left) - keep))
  [ "$s" -gt "$want" ] && s=$want
  if [ "$s" -lt 30 ]; then
    say "skip $name: only ${s}s left for it"
    return
  fi
  say "+ ($name, ${s}s) scripts/paper_regime.py $* $EXTRA_ARGS"
  # shellcheck disable=SC2086  (EXTRA_ARGS is a list of flags)
  timeout -k 10 "$s" "$PY" scripts/paper_regime.py --output_dir="$OUT/$name" \
    --time_budget_s=$((s - 15)) "$@" $EXTRA_ARGS >"$OUT/$name.log" 2>&1
  local rc=$?
  say "$name: rc=$rc ($([ $rc = 124 ] && echo 'timed out; results so far kept' || echo done)); GPU memory $(gpu_memory)"
  grep -E "^\[(init|costs|unit|skip|error)\]|^  .* b=[0-9]+ γ=[0-9]+: simulated" "$OUT/$name.log" \
    | tail -14 | sed "s/^/  $name: /" | tee -a "$LOG"
  [ -f "$OUT/$name/results.jsonl" ] && "$PY" scripts/paper_regime.py --summarize_only \
    --output_dir="$OUT/$name" >/dev/null 2>&1
}

say "start $(date -u +%FT%TZ) on $(hostname); commit $SPECDEC_COMMIT; JAX_PLATFORMS=$JAX_PLATFORMS"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true) >>"$LOG" 2>&1
timeout 60 "$PY" -c "import jax, jaxlib, flax; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'flax', flax.__version__, jax.devices())" 2>&1 | tee -a "$LOG"
UNROLL=$(timeout 60 "$PY" -c "import inspect, specdec; print(int('draft_unroll' in inspect.signature(specdec.speculative_generate).parameters))" 2>/dev/null || echo 0)
PAIRS=2
[ "$UNROLL" = 1 ] && PAIRS=3
say "speculative_generate takes draft_unroll: $UNROLL"

phase main "$MAIN_S" $((CMDBUF_S + PAIRS * PAIR_S + SUMMARY_S)) \
  --targets=xxl,xl,large --drafts=small,base
phase cmdbuf "$CMDBUF_S" $((PAIRS * PAIR_S + SUMMARY_S)) \
  --command_buffer="$CMDBUF" --targets=xxl --drafts=small --batch_sizes=1 --gammas=7,5 \
  --v_gammas=7,5
PAIR=(--targets=ende --drafts=ende --batch_sizes=1,8 --gammas=3,5 --v_gammas=3,5)
phase pair_default "$PAIR_S" $(((PAIRS - 1) * PAIR_S + SUMMARY_S)) "${PAIR[@]}"
phase pair_cmdbuf "$PAIR_S" $(((PAIRS - 2) * PAIR_S + SUMMARY_S)) "${PAIR[@]}" \
  --command_buffer="$CMDBUF"
if [ "$UNROLL" = 1 ]; then
  phase pair_unroll "$PAIR_S" "$SUMMARY_S" "${PAIR[@]}" --draft_unroll="$DRAFT_UNROLL"
fi

{
  echo "# Issue J on $(head -1 "$LOG" | sed 's/^\[0s\] start //')"
  echo
  for name in main cmdbuf pair_default pair_cmdbuf pair_unroll; do
    [ -f "$OUT/$name/summary.md" ] || continue
    echo "## Phase $name"
    echo
    sed 's/^#/##/' "$OUT/$name/summary.md"
    echo
  done
  echo "## Driver log"
  echo
  sed 's/^/    /' "$LOG"
} >"$OUT/SUMMARY.md"
say "end; wrote $OUT/SUMMARY.md"
