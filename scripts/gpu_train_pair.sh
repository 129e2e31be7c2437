#!/usr/bin/env bash
# Trains the EN->DE target and both drafts on one GPU inside a fixed wall-clock budget, then
# times speculative decoding there. Written for a short lease of one GPU (the workplace's lent
# H100: one command of at most 10 minutes); any machine with a CUDA JAX runs it.
#
#   OUT=/tmp/gpu_out bash scripts/gpu_train_pair.sh
#
# Packages the GPU image lacked (installed from .whl/ when present; .whl/fallback/ holds this
# repo's tested flax/optax/orbax, used only if the smoke test fails with the image's own):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#     -d .whl gin-config==0.5.0 tensorboardX==2.6.5
#   pip download ... -d .whl/fallback flax==0.12.8 optax==0.2.8 orbax-checkpoint==0.12.8
#
# Phases (deadlines are offsets from the start, all overridable through the environment):
#   1. smoke test of the installed jax/flax/optax/orbax (falls back to the pinned wheels in
#      .whl/fallback, if carried, when it fails);
#   2. concurrently: the target from scratch (TARGET_STEPS, T5X's Adafactor, cosine, dropout 0.1:
#      the recipe of the CPU-trained target v5) and a plain draft base from scratch (labels,
#      DRAFT_BASE_STEPS). STOP_TIMEs at TARGET_END_S are a safety net only: a run stopped by one
#      ends unannealed, and the log says so;
#   3. concurrently, from the draft base and with the same steps, data order and schedule:
#      the distilled draft (forward KL to the new target's logits) and the plain draft (labels),
#      so that the two differ only in the objective of their last DRAFT_STEPS steps;
#   4. the three models rounded to bfloat16 (as shipped) and packed into $OUT;
#   5. scripts/check_greedy_parity.py at two matmul precisions, then scripts/benchmark.py on the
#      new pair (until BUDGET_S).
# Training runs are scripts/train.py with the committed gin configs; every command is logged to
# $OUT/driver.log.
#
# Measured on the lent H100 (2026-11-26, jax 0.11.2): the target's train step ran at ~100
# steps/s at batch 256 (2.7 s per epoch of the EN->DE data), but compiling it took ~105 s for
# three bucket lengths, and the distillation step (two models) compiled slower still. The first
# version of this script spent a whole compile on a speed probe and its target stopped
# unannealed; this one pads every batch to 64 (one compile per run) and fixes the step counts.
set -u -o pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
: "${OUT:?set OUT to the output folder}"
PY=${PY:-python3}
WORK=${WORK:-/tmp/specdec_gpu}
BUDGET_S=${BUDGET_S:-555}
TARGET_END_S=${TARGET_END_S:-300}
DRAFTS_END_S=${DRAFTS_END_S:-430}
BATCH=${BATCH:-256}
TARGET_STEPS=${TARGET_STEPS:-10000}
TARGET_OPTIMIZER=${TARGET_OPTIMIZER:-adafactor}
TARGET_LR=${TARGET_LR:-1e-2}
TARGET_DROPOUT=${TARGET_DROPOUT:-0.1}
DRAFT_BASE_STEPS=${DRAFT_BASE_STEPS:-5000}
DRAFT_BASE_LR=${DRAFT_BASE_LR:-3e-3}
DRAFT_STEPS=${DRAFT_STEPS:-3000}
DRAFT_LR=${DRAFT_LR:-1e-3}
T0=$(date +%s)
mkdir -p "$OUT" "$WORK"
LOG=$OUT/driver.log
export XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=3 PYTHONUNBUFFERED=1
export JAX_PLATFORMS=${JAX_PLATFORMS:-cuda}

say() { echo "[$(($(date +%s) - T0))s] $*" | tee -a "$LOG"; }
run() { say "+ $*"; "$@" 2>&1 | tee -a "$LOG"; }

say "start $(date -u +%FT%TZ) on $(hostname); JAX_PLATFORMS=$JAX_PLATFORMS"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true) >>"$LOG" 2>&1
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >>"$LOG" 2>&1 && export PYTHONPATH=/tmp/site
fi

smoke() {
  $PY - <<'EOF'
import jax, jax.numpy as jnp, flax, optax, orbax.checkpoint, gin, tensorboardX, sentencepiece
print("versions: jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__,
      "orbax", orbax.checkpoint.__version__, "devices", jax.devices())
import tempfile
from specdec import T5Config, T5Model, generate, speculative_generate, training
cfg = T5Config(vocab_size=64, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
               num_encoder_layers=1, num_decoder_layers=1)
model = T5Model.init(cfg, 0)
sched = training.make_schedule(schedule="cosine", learning_rate=1e-2, warmup_steps=1,
                               total_steps=10)
trainer = training.Trainer(cfg, training.make_optimizer(schedule=sched), schedule=sched)
batch = {"inputs": jnp.ones((2, 8), jnp.int32), "targets": jnp.ones((2, 8), jnp.int32)}
state, m = trainer.train_step(trainer.init_state(model.params), batch)
with tempfile.TemporaryDirectory() as d:
  ck = training.Checkpoints(d + "/ck")
  ck.save(state); ck.close()
  training.save_for_inference(model, d + "/m")
  T5Model.load(d + "/m")
shipped = T5Model.load("specdec/assets/checkpoints/ende/target")  # written on a CPU
print("restored the shipped target onto", jax.tree_util.tree_leaves(shipped.params)[0].sharding)
g = generate(model, batch["inputs"], max_decode_len=8)
s = speculative_generate(model, model, batch["inputs"], gamma=2, max_decode_len=8)
assert (g.tokens == s.tokens).all()
print("smoke ok: loss", float(m["loss"]))
EOF
}
if ! run smoke; then
  say "smoke test failed with the installed packages; trying the pinned wheels in .whl/fallback"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/fallback/*.whl >>"$LOG" 2>&1 && export PYTHONPATH=/tmp/site
  run smoke || { say "smoke test failed; stopping"; exit 1; }
fi

TRAIN=(scripts/train.py --gin.BATCH_SIZE=$BATCH --gin.train.log_every=50 --gin.train.buckets="(64,)"
       --gin.train.eval_examples=0 --gin.train.keep_checkpoints=1 --gin.train.checkpoint_every=1000000)
tail_log() {  # $1 = name: the last lines of a run's log, into the driver log
  grep -ahoE "step [0-9]+: .*|done: .*|stop_time .*|[A-Za-z]*Error.*" "$WORK/$1.log" | tail -4 \
    | sed "s/^/  $1: /" | tee -a "$LOG"
}
background() {  # $1 = name, then the command: runs it with its log in $WORK/$1.log
  local name=$1; shift
  say "+ ($name) $*"
  "$@" >"$WORK/$name.log" 2>&1 &
}
rm -rf "$WORK"/target* "$WORK"/draft* "$WORK/pair"

# 2. The target and the draft base, concurrently.
background target $PY "${TRAIN[@]}" --gin_file=configs/models/ende_target.gin \
  --gin_file=configs/runs/train.gin --gin.MODEL_DIR="'$WORK/target'" \
  --gin.TRAIN_STEPS=$TARGET_STEPS --gin.STOP_TIME=$((T0 + TARGET_END_S)) \
  --gin.OPTIMIZER="'$TARGET_OPTIMIZER'" --gin.LEARNING_RATE=$TARGET_LR --gin.WARMUP_STEPS=500 \
  --gin.T5Config.dropout_rate=$TARGET_DROPOUT --gin.EXPORT_DIR="'$WORK/target_export'"
PID_T=$!
background draft_base $PY "${TRAIN[@]}" --gin_file=configs/models/ende_draft.gin \
  --gin_file=configs/runs/train.gin --gin.MODEL_DIR="'$WORK/draft_base'" \
  --gin.TRAIN_STEPS=$DRAFT_BASE_STEPS --gin.STOP_TIME=$((T0 + TARGET_END_S)) \
  --gin.LEARNING_RATE=$DRAFT_BASE_LR --gin.WARMUP_STEPS=300 --gin.T5Config.dropout_rate=0.0 \
  --gin.EXPORT_DIR="'$WORK/draft_base_export'"
PID_B=$!
wait $PID_B; RC_B=$?; tail_log draft_base
wait $PID_T; RC_T=$?; tail_log target
say "target rc=$RC_T, draft base rc=$RC_B"
[ $RC_T = 0 ] && [ $RC_B = 0 ] || exit 1
run $PY scripts/ship_checkpoint.py "$WORK/target_export" "$WORK/pair/ende/target" || exit 1
run $PY scripts/ship_checkpoint.py "$WORK/draft_base_export" "$WORK/pair/ende/draft_base" || exit 1

# 3. Distilled and plain drafts from the same base, concurrently.
draft_args() {  # $1 = name, $2 = run config
  echo --gin_file=configs/models/ende_draft.gin --gin_file=configs/runs/$2.gin \
    --gin.MODEL_DIR="'$WORK/$1'" --gin.INIT_FROM="'$WORK/pair/ende/draft_base'" \
    --gin.TRAIN_STEPS=$DRAFT_STEPS --gin.STOP_TIME=$((T0 + DRAFTS_END_S)) \
    --gin.LEARNING_RATE=$DRAFT_LR --gin.WARMUP_STEPS=50 --gin.T5Config.dropout_rate=0.0 \
    --gin.EXPORT_DIR="'$WORK/$1_export'"
}
background draft $PY "${TRAIN[@]}" $(draft_args draft distill) \
  --gin.TEACHER_DIR="'$WORK/pair/ende/target'"
PID_D=$!
background draft_plain $PY "${TRAIN[@]}" $(draft_args draft_plain train)
PID_P=$!
wait $PID_D; RC_D=$?; tail_log draft
wait $PID_P; RC_P=$?; tail_log draft_plain
say "drafts finished: distilled rc=$RC_D plain rc=$RC_P"
[ $RC_D = 0 ] && run $PY scripts/ship_checkpoint.py "$WORK/draft_export" "$WORK/pair/ende/draft"
[ $RC_P = 0 ] && run $PY scripts/ship_checkpoint.py "$WORK/draft_plain_export" "$WORK/pair/ende/draft_plain"

# 4. Pack what must come back before anything that could run out of time.
for d in target draft_base draft draft_plain; do
  cp "$WORK/$d/summary.json" "$WORK/pair/ende/$d.summary.json" 2>/dev/null
  cp "$WORK/$d/config.gin" "$WORK/pair/ende/$d.config.gin" 2>/dev/null
done
cp "$WORK"/target.log "$WORK"/draft*.log "$WORK/pair/ende/" 2>/dev/null
tar -C "$WORK/pair" -cf "$OUT/target.tar" ende/target
tar -C "$WORK/pair" -cf "$OUT/drafts.tar" $(cd "$WORK/pair" && ls -d ende/draft ende/draft_plain 2>/dev/null)
tar -C "$WORK/pair" -cf "$OUT/logs.tar" $(cd "$WORK/pair" && ls ende/*.json ende/*.gin ende/*.log 2>/dev/null)
say "packed: $(ls -la "$OUT" | tail -n +2 | awk '{print $5, $9}' | xargs)"

# 5. Greedy parity on this device at JAX's default f32 matmul precision (TF32 on NVIDIA) and at
# full precision (the first run here found greedy outputs differing at the default), then timing:
# the new pair, T5 and bigram drafts, gamma 3, batch 1.
[ -d "$WORK/pair/ende/draft" ] || { say "no draft; skipping the parity check and benchmark"; exit 0; }
for precision in default highest; do
  run timeout 60 $PY scripts/check_greedy_parity.py --precision=$precision --num_sentences=32 \
    --target="$WORK/pair/ende/target" --draft="$WORK/pair/ende/draft"
done
BENCH_S=$((T0 + BUDGET_S - $(date +%s)))
say "benchmark with ${BENCH_S}s left"
[ "$BENCH_S" -ge 30 ] || { say "too little time for the benchmark; skipping it"; exit 0; }
SPECDEC_CHECKPOINT_DIR=$WORK/pair run timeout $BENCH_S $PY - --gin_file=configs/benchmarks/quick.gin \
  --gin.benchmark.drafts="['t5_distilled','t5_plain','bigram']" --gin.benchmark.gammas="[3]" \
  --compilation_cache_dir=$WORK/jax_cache --output_dir="$OUT/bench" <<'EOF'
# scripts/benchmark.py with the vocabulary read by sentencepiece (no seqio/tensorflow here).
import runpy, sys
sys.argv[0] = "scripts/benchmark.py"
sys.path.insert(0, ".")
from specdec import data, training
class Vocab:
  def __init__(self, sp): self.sp = sp
  def encode(self, text): return self.sp.EncodeAsIds(text)
  def decode(self, ids): return self.sp.DecodeIds(list(ids))
data.vocabulary = lambda: Vocab(training.tokenizer())
runpy.run_path("scripts/benchmark.py", run_name="__main__")
EOF
say "end"
