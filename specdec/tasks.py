"""seqio Task / Mixture registration for the committed corpora.

Importing this module registers (idempotently):

* ``specdec_ende``: EN->DE translation, inputs prefixed with
  "translate English to German: " (as in T5), BLEU metric.
* ``specdec_ende_l10n``: the same with the Debian l10n pairs added to its train
  split (``data.EXTRA_TRAIN_FILES``); validation and test are specdec_ende's.
* ``specdec_summarize``: Debian long description -> synopsis, inputs prefixed
  with "summarize: ", ROUGE-1/2/Lsum metrics.
* ``specdec_all``: mixture of both (rates proportional to train sizes).

This is the only module that imports seqio and tensorflow (the ``[seqio]`` extra); it stands
above :mod:`specdec.data`, which needs neither.
"""

import contextlib
import functools
import os
import sys
import tempfile

from specdec import data


@contextlib.contextmanager
def _native_stderr_captured():
  """Sends what C++ code writes to file descriptor 2 to a temporary file while the block runs
  (tensorflow's import prints its oneDNN / CUDA-driver / absl::InitializeLog lines there, twice,
  whatever TF_CPP_MIN_LOG_LEVEL says); replays it if the block raises."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode="w+b") as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    except BaseException:
      os.dup2(saved, 2)
      captured.seek(0)
      sys.stderr.write(captured.read().decode("utf-8", "replace"))
      raise
    finally:
      os.dup2(saved, 2)
      os.close(saved)


with _native_stderr_captured():
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  try:
    import seqio  # pylint: disable=g-import-not-at-top,g-bad-import-order
    import tensorflow as tf  # pylint: disable=g-import-not-at-top,g-bad-import-order
  except ImportError as e:
    raise ImportError(f"specdec.tasks needs seqio and tensorflow ({e}); install the extra: "
                      "pip install -e '.[seqio]'") from e
  try:  # Keeps tensorflow (used only for tf.data) off any accelerator.
    tf.config.set_visible_devices([], "GPU")
  except (RuntimeError, ValueError):  # already initialised
    pass

TASK_NAMES = tuple(sorted(data.TASK_DIRS))
MIXTURE_NAME = data.MIXTURE_NAME


def _dataset_fn(split, shuffle_files, seed=None, *, task_name):
  del shuffle_files, seed  # One file per split; seqio shuffles examples.
  pairs = data.read_pairs(task_name, split)
  sources = [s for s, _ in pairs]
  targets = [t for _, t in pairs]
  return tf.data.Dataset.from_tensor_slices({
      "source": tf.constant(sources, dtype=tf.string),
      "target": tf.constant(targets, dtype=tf.string),
  })


def _add_prefix(dataset, prefix):
  def fn(ex):
    ex = dict(ex)
    ex["inputs"] = tf.strings.join([prefix, ex["inputs"]])
    return ex
  return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


@functools.lru_cache(maxsize=None)
def vocabulary() -> seqio.SentencePieceVocabulary:
  """The committed vocabulary as seqio's object (`data.vocabulary()` is the same model
  read without seqio)."""
  return seqio.SentencePieceVocabulary(data.vocab_path())


def output_features():
  vocab = vocabulary()
  return {
      "inputs": seqio.Feature(vocabulary=vocab, add_eos=True),
      "targets": seqio.Feature(vocabulary=vocab, add_eos=True),
  }


def _make_task(name):
  source = seqio.FunctionDataSource(
      dataset_fn=functools.partial(_dataset_fn, task_name=name),
      splits=data.SPLITS,
      num_input_examples={s: data.num_examples(name, s) for s in data.SPLITS})
  metric = data.rouge if name == "specdec_summarize" else data.bleu
  return seqio.Task(
      name,
      source=source,
      preprocessors=[
          functools.partial(seqio.preprocessors.rekey,
                            key_map={"inputs": "source", "targets": "target"}),
          functools.partial(_add_prefix, prefix=data.TASK_PREFIXES[name]),
          seqio.preprocessors.tokenize,
          seqio.preprocessors.append_eos_after_trim,
      ],
      output_features=output_features(),
      metric_fns=[metric],
  )


def register():
  """(Re-)registers the tasks and the mixture; safe to call repeatedly."""
  if MIXTURE_NAME in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(MIXTURE_NAME)
  for name in TASK_NAMES:
    if name in seqio.TaskRegistry.names():
      seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add_provider(name, _make_task(name))
  seqio.MixtureRegistry.add(
      MIXTURE_NAME, list(data.MIXTURE_TASKS),
      default_rate=seqio.mixing_rate_num_examples)


def get_task(name):
  """Returns a specdec Task (or the mixture); ValueError for unknown names."""
  known = TASK_NAMES + (MIXTURE_NAME,)
  if name not in known:
    raise ValueError(f"unknown specdec task {name!r}; registered specdec "
                     f"tasks: {list(known)}")
  if name == MIXTURE_NAME:
    return seqio.get_mixture_or_task(name)
  return seqio.TaskRegistry.get(name)


register()
