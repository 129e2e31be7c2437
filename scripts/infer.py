r"""T5X-style inference from gin: decode a seqio task split, write outputs and metrics.

    python scripts/infer.py --gin_file=configs/runs/infer.gin \
        --gin.OUTPUT_DIR="'/tmp/infer'" --gin.infer.max_examples=256

The decode function is a gin binding, as in T5X:

    EncoderDecoderModel.decode_fn = @specdec.decode_fns.speculative_sample
    specdec.decode_fns.speculative_sample.gamma = 4

With `infer.compare_baseline = True` the same examples are also decoded with
`specdec.decode_fns.temperature_sample`, and the script checks that greedy speculative decoding
scores exactly what the baseline scores (identical outputs, identical metrics).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import gin  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from specdec import decode_fns, gin_utils, models, pretrained  # noqa: E402
from specdec.model import T5Model  # noqa: E402
from specdec.loading import load_model  # noqa: E402


# Gin at the script boundary only: the library stays free of gin decorators.
speculative_sample = gin.external_configurable(decode_fns.speculative_sample,
                                               module="specdec.decode_fns")
temperature_sample = gin.external_configurable(decode_fns.temperature_sample,
                                               module="specdec.decode_fns")
EncoderDecoderModel = gin.external_configurable(models.EncoderDecoderModel,
                                                module="specdec.models")


def _batches(task_name: str, split: str, *, batch_size: int, input_length: int,
             max_examples: int | None):
  """Padded numpy batches of encoder inputs (fixed shape: one compile) and reference texts."""
  from specdec import tasks  # pylint: disable=g-import-not-at-top  (imports seqio/tensorflow)
  task = tasks.get_task(task_name)
  dataset = task.get_dataset(sequence_length={"inputs": input_length, "targets": 512},
                             split=split, shuffle=False)
  examples = list(dataset.as_numpy_iterator())[:max_examples]
  for start in range(0, len(examples), batch_size):
    chunk = examples[start:start + batch_size]
    tokens = np.zeros((batch_size, input_length), np.int32)
    for i, ex in enumerate(chunk):
      tokens[i, :len(ex["inputs"])] = ex["inputs"]
    yield tokens, [ex["targets_pretokenized"].decode() for ex in chunk], task


def _decode_split(model, params, batches, *, rng, desc) -> tuple[list[np.ndarray], list, float]:
  outputs, aux_all, seconds = [], [], 0.0
  for step, (tokens, refs, _) in enumerate(tqdm(batches, desc=desc, unit="batch")):
    start = time.perf_counter()
    out, aux = model.predict_batch_with_aux(params, {"encoder_input_tokens": tokens},
                                            jax.random.fold_in(rng, step))
    out = np.asarray(jax.block_until_ready(out))
    seconds += time.perf_counter() - start
    outputs.extend(out[:len(refs)])
    aux_all.append(aux)
  return outputs, aux_all, seconds


@gin.configurable
def infer(*, output_dir: str = gin.REQUIRED, pair: str = "ende", task: str | None = None,
          split: str = "test", batch_size: int = 16, input_length: int = 64,
          max_examples: int | None = None, seed: int = 0,
          target_checkpoint: str | None = None, draft_checkpoint: str | None = None,
          compare_baseline: bool = True) -> dict[str, Any]:
  """Decodes `task`/`split` with the gin-configured `EncoderDecoderModel`.

  The target and draft come from the shipped `pair`, or from specdec checkpoints
  (`target_checkpoint`/`draft_checkpoint`: `T5Model.save` directories; the draft may be any
  saved draft kind, e.g. a `SharedEncoderDraft`).
  """
  shipped = pretrained.load(pair)
  target = T5Model.load(target_checkpoint) if target_checkpoint else shipped.target
  draft = load_model(draft_checkpoint) if draft_checkpoint else shipped.draft  # Any kind.
  task = task or shipped.task
  # The gin-wrapped class: its decode_fn (and any other argument) comes from the gin config.
  model = EncoderDecoderModel(target.config, draft=draft)  # pylint: disable=not-callable
  rng = jax.random.PRNGKey(seed)
  batches = list(_batches(task, split, batch_size=batch_size, input_length=input_length,
                          max_examples=max_examples))
  refs = [r for _, rs, _ in batches for r in rs]
  seqio_task = batches[0][2]

  def score(outputs):
    texts = shipped.decode(np.stack(outputs))
    metrics = {}
    for metric_fn in seqio_task.metric_fns:
      metrics.update(metric_fn(refs, texts))
    return texts, metrics

  fn_name = getattr(model.decode_fn, "__name__", str(model.decode_fn))
  outputs, aux, seconds = _decode_split(model, target.params, batches, rng=rng, desc=fn_name)
  texts, metrics = score(outputs)
  report: dict[str, Any] = {"task": task, "split": split, "examples": len(refs),
                            "decode_fn": fn_name, "metrics": metrics, "seconds": seconds}
  stats = [a["stats"] for a in aux if "stats" in a]
  if stats:
    totals = [s.summary() for s in stats]
    accepted = sum(t["accepted"] for t in totals)
    rejected = sum(t["rejected"] for t in totals)
    report["alpha"] = accepted / max(1, accepted + rejected)
    report["target_calls"] = sum(t["target_calls"] for t in totals)

  os.makedirs(output_dir, exist_ok=True)
  with open(os.path.join(output_dir, f"{task}_{split}_outputs.jsonl"), "w") as f:
    for ref, text in zip(refs, texts):
      f.write(json.dumps({"target": ref, "prediction": text}, ensure_ascii=False) + "\n")

  if compare_baseline:
    baseline = models.EncoderDecoderModel(
        target.config, decode_fn=decode_fns.temperature_sample, eos_id=model.eos_id,
        max_decode_length=model.max_decode_length)
    base_outputs, _, base_seconds = _decode_split(baseline, target.params, batches, rng=rng,
                                                  desc="baseline")
    _, base_metrics = score(base_outputs)
    identical = all(np.array_equal(a, b) for a, b in zip(outputs, base_outputs))
    report["baseline"] = {"metrics": base_metrics, "seconds": base_seconds,
                          "identical_outputs": identical,
                          "identical_metrics": base_metrics == metrics}
  with open(os.path.join(output_dir, f"{task}_{split}_metrics.json"), "w") as f:
    json.dump(report, f, indent=2)
  print(json.dumps(report, indent=2))
  return report


def main(argv):
  del argv
  infer()  # pylint: disable=no-value-for-parameter


if __name__ == "__main__":
  gin_utils.run(main)
