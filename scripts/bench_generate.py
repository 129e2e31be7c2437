"""Benchmark: ms per generated token of `specdec.generate` against transformers' greedy `generate`.

Both decode the same weights: a random Hugging Face T5 v1.1 (by default 512 wide, 6 + 6 layers,
8k vocabulary) is saved with `save_pretrained` and converted with `T5Model.from_hf`. Decoding is
greedy, of a fixed length (no EOS), from random source sentences; each setting is warmed up first
(for specdec that is the XLA compile, reported separately), then timed as the median of several
runs. The script checks that both produce identical tokens.

  python scripts/bench_generate.py                      # writes results/bench_generate.json
  python scripts/bench_generate.py --batch_sizes 1 --runs 3 --output /tmp/b.json

Timings are wall-clock on whatever machine runs this; other processes competing for the CPU
inflate both columns (the load average before and after is recorded in the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# libgomp's default busy-waiting makes torch's OpenMP threads spin against every other process
# on a shared 2-core machine (measured: ~40x slower greedy decoding under load). PASSIVE is
# what a fair comparison needs; it must be set before torch loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402
import numpy as np  # noqa: E402


def _parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
  parser.add_argument("--decode_len", type=int, default=64, help="Tokens generated per row.")
  parser.add_argument("--source_len", type=int, default=32, help="Encoder input length.")
  parser.add_argument("--runs", type=int, default=5, help="Timed runs per setting (median).")
  parser.add_argument("--d_model", type=int, default=512)
  parser.add_argument("--d_ff", type=int, default=1024)
  parser.add_argument("--num_heads", type=int, default=8)
  parser.add_argument("--d_kv", type=int, default=64)
  parser.add_argument("--num_layers", type=int, default=6, help="Encoder and decoder layers.")
  parser.add_argument("--vocab_size", type=int, default=8192)
  parser.add_argument("--torch_threads", type=int, default=2)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--output", default="results/bench_generate.json")
  args = parser.parse_args(argv)
  for name in ("decode_len", "source_len", "runs", "d_model", "d_ff", "num_heads", "d_kv",
               "num_layers", "vocab_size", "torch_threads"):
    if getattr(args, name) <= 0:
      parser.error(f"--{name} must be positive")
  if any(b <= 0 for b in args.batch_sizes):
    parser.error("--batch_sizes must be positive")
  return args


def _build_models(args, directory: str):
  """A random HF T5 v1.1 and the specdec T5Model converted from its saved directory."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  import specdec  # pylint: disable=g-import-not-at-top
  config = transformers.T5Config(
      vocab_size=args.vocab_size, d_model=args.d_model, d_kv=args.d_kv, num_heads=args.num_heads,
      d_ff=args.d_ff, num_layers=args.num_layers, num_decoder_layers=args.num_layers,
      feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
  torch.manual_seed(args.seed)
  hf = transformers.T5ForConditionalGeneration(config).eval()
  hf.save_pretrained(directory, safe_serialization=True)
  ours = specdec.T5Model.from_hf(directory)
  return hf, ours


def _median_ms(fn, runs: int) -> tuple[float, list[float]]:
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    fn()
    times.append((time.perf_counter() - start) * 1e3)
  return statistics.median(times), times


def _load() -> list[float] | None:
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return None


def main(argv=None) -> dict:
  args = _parse_args(argv)
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  import specdec  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(args.torch_threads)
  load_before = _load()
  with tempfile.TemporaryDirectory() as directory:
    hf, ours = _build_models(args, directory)
  print(f"model: {ours.config}  ({ours.num_params / 1e6:.1f}M parameters)", flush=True)

  rng = np.random.RandomState(args.seed)
  rows = []
  for batch in args.batch_sizes:
    source = rng.randint(2, args.vocab_size, size=(batch, args.source_len)).astype(np.int32)

    def run_specdec():
      result = specdec.generate(ours, source, max_decode_len=args.decode_len, eos_id=None)
      return np.asarray(jax.block_until_ready(result.tokens))

    def run_hf():
      with torch.no_grad():
        out = hf.generate(input_ids=torch.tensor(source, dtype=torch.long),
                          attention_mask=torch.ones(source.shape, dtype=torch.long),
                          do_sample=False, num_beams=1, max_new_tokens=args.decode_len,
                          min_new_tokens=args.decode_len, eos_token_id=None, pad_token_id=0,
                          decoder_start_token_id=0)
      return out[:, 1:].numpy()  # Drop the decoder start token HF prepends.

    start = time.perf_counter()
    ours_tokens = run_specdec()  # Compiles.
    compile_ms = (time.perf_counter() - start) * 1e3
    hf_tokens = run_hf()  # Warm-up.
    identical = bool(np.array_equal(ours_tokens, hf_tokens))
    mismatch = None if identical else int(np.argmax((ours_tokens != hf_tokens).any(0)))
    specdec_ms, specdec_all = _median_ms(run_specdec, args.runs)
    hf_ms, hf_all = _median_ms(run_hf, args.runs)
    row = dict(
        batch=batch, decode_len=args.decode_len, source_len=args.source_len,
        specdec_first_call_ms=round(compile_ms, 1),
        specdec_ms_per_step=round(specdec_ms / args.decode_len, 3),
        hf_ms_per_step=round(hf_ms / args.decode_len, 3),
        specdec_ms_per_token=round(specdec_ms / args.decode_len / batch, 3),
        hf_ms_per_token=round(hf_ms / args.decode_len / batch, 3),
        speedup=round(hf_ms / specdec_ms, 2), identical_tokens=identical,
        first_mismatch_step=mismatch,
        specdec_run_ms=[round(t, 1) for t in specdec_all], hf_run_ms=[round(t, 1) for t in hf_all])
    rows.append(row)
    print(f"batch {batch}: identical tokens: {identical}"
          + ("" if identical else f" (first mismatch at step {mismatch})"), flush=True)

  table = [
      "| batch | specdec ms/step | HF ms/step | specdec ms/token | HF ms/token | HF / specdec "
      "| specdec first call (compile) ms | identical tokens |",
      "|---:|---:|---:|---:|---:|---:|---:|:---:|",
  ]
  for r in rows:
    table.append(
        f"| {r['batch']} | {r['specdec_ms_per_step']:.2f} | {r['hf_ms_per_step']:.2f} "
        f"| {r['specdec_ms_per_token']:.2f} | {r['hf_ms_per_token']:.2f} | {r['speedup']:.2f}x "
        f"| {r['specdec_first_call_ms']:.0f} | {'yes' if r['identical_tokens'] else 'NO'} |")
  print("\n".join(table))

  report = dict(
      benchmark="specdec.generate vs transformers greedy generate (same converted weights)",
      config=dict(vars(args)), specdec_config=specdec.model.config_to_dict(ours.config),
      num_params=ours.num_params, rows=rows, table="\n".join(table),
      environment=dict(
          python=platform.python_version(), jax=jax.__version__, torch=torch.__version__,
          transformers=transformers.__version__, jax_devices=[str(d) for d in jax.devices()],
          cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
          omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
          load_average_before=load_before, load_average_after=_load()),
      notes=("ms/step: wall-clock of one generate call / decode_len (all rows advance together); "
             "ms/token: ms/step / batch. Median of the timed runs after one warm-up call."))
  if args.output:
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
      json.dump(report, f, indent=2)
    print(f"wrote {args.output}")
  if not all(r["identical_tokens"] for r in rows):
    print("WARNING: specdec and transformers produced different tokens", file=sys.stderr)
  return report


if __name__ == "__main__":
  main()
