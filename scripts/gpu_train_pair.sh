#!/usr/bin/env bash
# Trains issue H's EN->DE pair on one GPU inside a fixed wall-clock budget: a target of T5 v1.1-
# small's shape (48M, configs/models/ende_target_small.gin) on the EN->DE corpus plus the gettext
# catalogs (task specdec_ende_l10n), then, from exactly the target that ships (int8), a
# shared-encoder draft (reads the target's encoder; the main draft) and a small T5 draft of its
# own, both distilled. Written for the workplace's lent H100/H200: one command of at most 10
# minutes; any machine with a CUDA JAX runs it.
#
#   OUT=/tmp/gpu_out bash scripts/gpu_train_pair.sh
#   DRY_RUN=1 OUT=/tmp/dry bash scripts/gpu_train_pair.sh     # the same phases, tiny, on a CPU
#
# Packages the GPU image lacks (gin-config, tensorboardX) come from .whl/ when present:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#     -d .whl gin-config==0.5.0 tensorboardX==2.6.5
#
# Phases (deadlines are offsets from the start, all overridable through the environment):
#   1. smoke test of jax/flax/optax/orbax and of both draft kinds;
#   2. the target alone: Adafactor (T5X's), peak TARGET_LR, dropout 0.1, bfloat16 compute
#      (TARGET_DTYPE), a warmup-stable-decay schedule sized by the clock (train.py
#      schedule='wsd', time_budget_s = TARGET_END_S - elapsed - TARGET_COMPILE_S): it ends
#      annealed inside its budget whatever the device's speed, and logs the steps it took;
#   3. the target rounded as it ships (int8 weights, per-channel scales: scripts/ship_checkpoint.py)
#      and, concurrently, distilled from that exact target (forward KL on the training pairs):
#      the shared-encoder draft (configs/models/ende_shared_draft_small.gin, initialised from the
#      target's first decoder layer where widths agree) and the small T5 draft (warm-started from
#      the shipped 8M pair's draft_small, a T5 of its own over the same vocabulary);
#   4. everything rounded as shipped and packed into $OUT in files of at most 15 MiB (the
#      device tool brings back 8 files of 16 MiB at most, 64 MiB in all);
#   5. scripts/check_greedy_parity.py for both drafts at two matmul precisions (until BUDGET_S).
# Warm starts (optional): TARGET_INIT_FROM (a T5Model directory of the target's shape, e.g. the
# shipped 48M target, or scripts/grow_model.py's growth of a smaller one; lower TARGET_LR and
# TARGET_WARMUP then) and DRAFT_INIT_FROM (a shared-encoder draft of ende_shared_draft_small's
# shape, DRAFT_GIN for another draft shape such as configs/models/ende_shared_draft.gin).
# Every command is logged to $OUT/driver.log; each run's log and summary.json are packed.
# Reassemble on the CPU: cat $OUT/pair.tar.part* > pair.tar && tar -xf pair.tar.
set -u -o pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
: "${OUT:?set OUT to the output folder}"
PY=${PY:-python3}
WORK=${WORK:-/tmp/specdec_gpu}
DRY_RUN=${DRY_RUN:-0}
if [ "$DRY_RUN" = 1 ]; then  # Tiny models, seconds of training, on whatever JAX has (a CPU).
  : "${BUDGET_S:=900}" "${TARGET_END_S:=240}" "${DRAFTS_END_S:=480}" "${TARGET_COMPILE_S:=60}"
  : "${BATCH:=8}" "${MAX_STEPS:=40}" "${DRAFT_STEPS:=6}" "${EVAL_EXAMPLES:=8}"
  TINY=(--gin.T5Config.emb_dim=32 --gin.T5Config.num_heads=2 --gin.T5Config.head_dim=16
        --gin.T5Config.mlp_dim=64 --gin.T5Config.num_encoder_layers=2 --gin.T5Config.num_decoder_layers=2)
  TINY_SHARED=(--gin.SharedEncoderConfig.encoder_dim=32 --gin.SharedEncoderConfig.emb_dim=32
               --gin.SharedEncoderConfig.num_heads=2 --gin.SharedEncoderConfig.head_dim=16
               --gin.SharedEncoderConfig.mlp_dim=64)
  export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
else
  TINY=(); TINY_SHARED=()
  export JAX_PLATFORMS=${JAX_PLATFORMS:-cuda}
fi
BUDGET_S=${BUDGET_S:-540}
TARGET_END_S=${TARGET_END_S:-330}       # Phase 2 ends (its training clock stops before this).
TARGET_COMPILE_S=${TARGET_COMPILE_S:-75}  # Start-up + compile allowance inside phase 2.
DRAFTS_END_S=${DRAFTS_END_S:-470}
BATCH=${BATCH:-256}
MAX_STEPS=${MAX_STEPS:-100000}         # An upper bound; the clock decides.
TARGET_LR=${TARGET_LR:-1e-2}
TARGET_DTYPE=${TARGET_DTYPE:-bfloat16}
TASK=${TASK:-specdec_ende_l10n}
TARGET_WARMUP=${TARGET_WARMUP:-500}
TARGET_INIT_FROM=${TARGET_INIT_FROM:-}
DRAFT_INIT_FROM=${DRAFT_INIT_FROM:-}
DRAFT_GIN=${DRAFT_GIN:-configs/models/ende_shared_draft_small.gin}
DRAFT_STEPS=${DRAFT_STEPS:-3000}
DRAFT_LR=${DRAFT_LR:-1e-3}
EVAL_EXAMPLES=${EVAL_EXAMPLES:-256}
T0=$(date +%s)
mkdir -p "$OUT" "$WORK"
LOG=$OUT/driver.log
export XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=3 PYTHONUNBUFFERED=1

say() { echo "[$(($(date +%s) - T0))s] $*" | tee -a "$LOG"; }
run() { say "+ $*"; "$@" 2>&1 | tee -a "$LOG"; }
left() { echo $((T0 + $1 - $(date +%s))); }

say "start $(date -u +%FT%TZ) on $(hostname); JAX_PLATFORMS=$JAX_PLATFORMS DRY_RUN=$DRY_RUN"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true) >>"$LOG" 2>&1
(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo "commit: ${SPECDEC_COMMIT:-unknown}") >>"$LOG"
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >>"$LOG" 2>&1 && export PYTHONPATH=/tmp/site
fi

# 1. Smoke test.
run $PY - <<'EOF' || { say "smoke test failed; stopping"; exit 1; }
import jax, flax, optax, orbax.checkpoint, gin, tensorboardX, sentencepiece
print("versions: jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__,
      "orbax", orbax.checkpoint.__version__, "devices", jax.devices())
import tempfile
import jax.numpy as jnp
from specdec import (SharedEncoderDraft, T5Config, T5Model, generate, load_model,
                     speculative_generate, training)
cfg = T5Config(vocab_size=64, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
               num_encoder_layers=1, num_decoder_layers=1)
model = T5Model.init(cfg, 0)
trainer = training.Trainer(cfg, training.make_optimizer(optimizer="adafactor", schedule=None))
batch = {"inputs": jnp.ones((2, 8), jnp.int32), "targets": jnp.ones((2, 8), jnp.int32)}
state = training.set_learning_rate(trainer.init_state(model.params), 1e-2)
state, m = trainer.train_step(state, batch)
draft = SharedEncoderDraft.from_target(model)
with tempfile.TemporaryDirectory() as d:
  training.save_for_inference(model, d + "/m", dtype="int8")
  training.save_for_inference(draft, d + "/d", dtype="bfloat16")
  assert isinstance(load_model(d + "/d"), SharedEncoderDraft)
shipped = T5Model.load("specdec/assets/checkpoints/ende/target")  # written on a CPU
print("restored the shipped target onto", jax.tree_util.tree_leaves(shipped.params)[0].sharding)
g = generate(model, batch["inputs"], max_decode_len=8)
for d in (model, draft):
  s = speculative_generate(model, d, batch["inputs"], gamma=2, max_decode_len=8)
  assert (g.tokens == s.tokens).all()
print("smoke ok: loss", float(m["loss"]))
EOF

TRAIN=(scripts/train.py --gin.BATCH_SIZE=$BATCH --gin.train.log_every=50 --gin.train.buckets="(64,)"
       --gin.train.keep_checkpoints=1 --gin.train.checkpoint_every=1000000 --gin.TASK="'$TASK'")
tail_log() {  # $1 = name: the last lines of a run's log, into the driver log
  grep -ahoE "step [0-9]+: .*|done: .*|decay over .*|alpha on .*|[A-Za-z]*Error.*" "$WORK/$1.log" \
    | tail -5 | sed "s/^/  $1: /" | tee -a "$LOG"
}
background() {  # $1 = name, then the command: runs it with its log in $WORK/$1.log
  local name=$1; shift
  say "+ ($name) $*"
  "$@" >"$WORK/$name.log" 2>&1 &
}
rm -rf "$WORK"/target* "$WORK"/draft* "$WORK/pair"
mkdir -p "$WORK/pair/ende"

# 2. The target, sized by the clock.
TARGET_BUDGET=$(( $(left $TARGET_END_S) - TARGET_COMPILE_S ))
say "target: ${TARGET_BUDGET}s of training after its compile"
[ "$TARGET_BUDGET" -ge 20 ] || { say "no time left for the target; stopping"; exit 1; }
background target $PY "${TRAIN[@]}" --gin_file=configs/models/ende_target_small.gin \
  --gin_file=configs/runs/train.gin "${TINY[@]}" --gin.MODEL_DIR="'$WORK/target'" \
  --gin.TRAIN_STEPS=$MAX_STEPS --gin.SCHEDULE="'wsd'" --gin.train.time_budget_s=$TARGET_BUDGET \
  --gin.train.decay_fraction=0.25 --gin.OPTIMIZER="'adafactor'" --gin.LEARNING_RATE=$TARGET_LR \
  --gin.WARMUP_STEPS=$TARGET_WARMUP ${TARGET_INIT_FROM:+--gin.INIT_FROM="'$TARGET_INIT_FROM'"} \
  --gin.T5Config.dropout_rate=0.1 --gin.T5Config.dtype="'$TARGET_DTYPE'" \
  --gin.train.eval_examples=$EVAL_EXAMPLES --gin.STOP_TIME=$((T0 + TARGET_END_S + 30)) \
  --gin.EXPORT_DIR="'$WORK/target_export'"
wait $!; RC_T=$?; tail_log target
say "target rc=$RC_T"
[ $RC_T = 0 ] || exit 1

# 3. The target as it ships, then both drafts from exactly that target, concurrently.
SHIPPED=$WORK/pair/ende
run $PY scripts/ship_checkpoint.py --dtype=int8 "$WORK/target_export" "$SHIPPED/target" || exit 1
run $PY - "$SHIPPED/target" <<'EOF'  # Computes in float32 on the CPU as shipped; train in bf16 here.
import json, sys
path = sys.argv[1] + "/config.json"
config = json.load(open(path)); config.update(dtype="float32", dropout_rate=0.0)
json.dump(config, open(path, "w"), indent=2, sort_keys=True)
EOF
DRAFT_COMMON=(--gin.TEACHER_DIR="'$SHIPPED/target'" --gin.TRAIN_STEPS=$DRAFT_STEPS
              --gin.LEARNING_RATE=$DRAFT_LR --gin.WARMUP_STEPS=100
              --gin.STOP_TIME=$((T0 + DRAFTS_END_S)) --gin.train.eval_examples=$EVAL_EXAMPLES
              --gin.train.alpha_examples=$EVAL_EXAMPLES)
background draft "$PY" "${TRAIN[@]}" --gin_file="$DRAFT_GIN" \
  --gin_file=configs/runs/distill_shared_encoder.gin "${TINY_SHARED[@]}" "${DRAFT_COMMON[@]}" \
  ${DRAFT_INIT_FROM:+--gin.INIT_FROM="'$DRAFT_INIT_FROM'"} \
  --gin.MODEL_DIR="'$WORK/draft'" --gin.EXPORT_DIR="'$WORK/draft_export'"
PID_D=$!
SMALL_INIT=specdec/assets/checkpoints/ende/draft_small
[ -d "$SMALL_INIT" ] || SMALL_INIT=specdec/assets/checkpoints/ende/draft
SMALL_ARGS=(--gin.INIT_FROM="'$SMALL_INIT'")
[ "$DRY_RUN" = 1 ] && SMALL_ARGS=()  # The tiny target's vocabulary matches; its size does not.
background draft_small "$PY" "${TRAIN[@]}" --gin_file=configs/models/ende_draft.gin \
  --gin_file=configs/runs/distill.gin "${DRAFT_COMMON[@]}" "${SMALL_ARGS[@]}" \
  --gin.T5Config.dropout_rate=0.0 --gin.MODEL_DIR="'$WORK/draft_small'" \
  --gin.EXPORT_DIR="'$WORK/draft_small_export'"
PID_S=$!
wait $PID_D; RC_D=$?; tail_log draft
wait $PID_S; RC_S=$?; tail_log draft_small
say "drafts finished: shared-encoder rc=$RC_D small rc=$RC_S"
[ $RC_D = 0 ] && run $PY scripts/ship_checkpoint.py "$WORK/draft_export" "$SHIPPED/draft"
[ $RC_S = 0 ] && run $PY scripts/ship_checkpoint.py "$WORK/draft_small_export" "$SHIPPED/draft_small"

# 4. Pack what must come back before anything that could run out of time.
for d in target draft draft_small; do
  cp "$WORK/$d/summary.json" "$SHIPPED/$d.summary.json" 2>/dev/null
  cp "$WORK/$d/config.gin" "$SHIPPED/$d.config.gin" 2>/dev/null
  cp "$WORK/$d.log" "$SHIPPED/$d.log" 2>/dev/null
done
tar -C "$WORK/pair" -cf "$WORK/pair.tar" ende
split -b 15M -d "$WORK/pair.tar" "$OUT/pair.tar.part"
say "packed: $(ls -la "$OUT" | tail -n +2 | awk '{print $5, $9}' | xargs)"

# 5. Greedy parity on this device, each draft, at JAX's default f32 matmul precision (TF32 on
# NVIDIA) and at full precision.
for d in draft draft_small; do
  [ -d "$SHIPPED/$d" ] || continue
  for precision in default highest; do
    [ "$(left $BUDGET_S)" -ge 30 ] || { say "no time left for parity ($d, $precision)"; break 2; }
    run timeout "$(left $BUDGET_S)" $PY scripts/check_greedy_parity.py --precision=$precision \
      --num_sentences=32 --target="$SHIPPED/target" --draft="$SHIPPED/$d"
  done
done
say "end"
