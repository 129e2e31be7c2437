"""Committed corpora: asset paths, reading, vocabulary and metrics.

The data files are built by ``scripts/build_data.py`` (see
``specdec/assets/data/LICENSES.md``) and the vocabulary by
``scripts/train_vocab.py``. Nothing here imports seqio or tensorflow: the
vocabulary is read with sentencepiece alone (:func:`vocabulary`). The seqio
tasks live one level above, in :mod:`specdec.tasks` (which imports this
module, never the other way round), with seqio's own vocabulary object.
"""

import functools
import gzip
import hashlib
import json
import os
import re
import unicodedata
from typing import Dict, List, Sequence, Tuple

ASSETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
DATA_DIR = os.path.join(ASSETS_DIR, "data")
VOCAB_PATH = os.path.join(ASSETS_DIR, "vocab", "spm_4k.model")
COUNTS_FILE = "COUNTS.json"

SPLITS = ("train", "validation", "test")

# Task name -> directory under DATA_DIR. The directory names are accepted too.
TASK_DIRS = {
    "specdec_ende": "wmt_style_ende",
    "specdec_ende_l10n": "wmt_style_ende",
    "specdec_summarize": "debian_summarize",
}
TASK_PREFIXES = {
    "specdec_ende": "translate English to German: ",
    "specdec_ende_l10n": "translate English to German: ",
    "specdec_summarize": "summarize: ",
}
# Files (in the task's directory) appended to its train split; its validation and test
# splits are those of the directory. specdec_ende_l10n = specdec_ende + the Debian l10n pairs
# of scripts/build_l10n_data.py (gettext catalogs and GNOME help; see LICENSES.md).
EXTRA_TRAIN_FILES = {"specdec_ende_l10n": ("train_l10n.tsv.gz",)}
MIXTURE_NAME = "specdec_all"
MIXTURE_TASKS = ("specdec_ende", "specdec_summarize")

# T5 special ids of the committed vocabulary.
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
VOCAB_SIZE = 4096


def normalize_source(text: str) -> str:
  """Normalisation used for de-duplication and splitting (as build_data.py)."""
  text = unicodedata.normalize("NFKC", text).lower()
  text = re.sub(r"[^\w\s]", "", text)
  return re.sub(r"\s+", " ", text).strip()


def _task_dir(task_name: str) -> str:
  if task_name in TASK_DIRS:
    return TASK_DIRS[task_name]
  if task_name in TASK_DIRS.values():
    return task_name
  raise ValueError(f"unknown specdec task {task_name!r}; known: "
                   f"{sorted(TASK_DIRS)}")


def data_file(task_name: str, split: str) -> str:
  """Path of the gzip'ed TSV for a task and split (under the current DATA_DIR)."""
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; known: {list(SPLITS)}")
  return os.path.join(DATA_DIR, _task_dir(task_name), f"{split}.tsv.gz")


def load_counts(data_dir: str = None) -> Dict[str, dict]:
  """Reads COUNTS.json: {"<dir>/<split>.tsv.gz": {"lines": n, "sha256": h}}."""
  path = os.path.join(data_dir or DATA_DIR, COUNTS_FILE)
  if not os.path.exists(path):
    raise ValueError(f"missing counts file {path}")
  with open(path) as f:
    return json.load(f)


def _split_files(task_name: str, split: str) -> List[str]:
  """The COUNTS.json keys ("<dir>/<file>") of a task's split, in reading order."""
  data_file(task_name, split)  # ValueError for an unknown task or split.
  task_dir = _task_dir(task_name)
  extra = EXTRA_TRAIN_FILES.get(task_name, ()) if split == "train" else ()
  return [f"{task_dir}/{split}.tsv.gz"] + [f"{task_dir}/{name}" for name in extra]


def num_examples(task_name: str, split: str) -> int:
  counts = load_counts()
  return sum(int(counts[rel]["lines"]) for rel in _split_files(task_name, split))


def read_pairs(task_name: str, split: str) -> List[Tuple[str, str]]:
  """Returns the (source, target) pairs of a committed split (with EXTRA_TRAIN_FILES
  appended for the train split of a task that has them).

  Raises:
    ValueError: (naming the file) if a file is missing, a line does not have
      exactly two tab-separated columns, or the line count / sha256 do not match
      COUNTS.json.
  """
  pairs = []
  for rel in _split_files(task_name, split):
    pairs.extend(read_tsv(rel))
  return pairs


def read_tsv(rel: str) -> List[Tuple[str, str]]:
  """The (source, target) rows of DATA_DIR/`rel`, checked against COUNTS.json."""
  path = os.path.join(DATA_DIR, rel)
  counts = load_counts(DATA_DIR)
  if rel not in counts:
    raise ValueError(f"{path}: no entry {rel!r} in {COUNTS_FILE}")
  if not os.path.exists(path):
    raise ValueError(f"missing data file {path}")
  with open(path, "rb") as f:
    raw = f.read()
  try:
    text = gzip.decompress(raw).decode("utf-8")
  except (OSError, EOFError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: cannot read gzip'ed UTF-8 TSV: {e}") from e
  lines = text.split("\n")
  if lines and lines[-1] == "":
    lines.pop()
  expected = int(counts[rel]["lines"])
  if len(lines) != expected:
    raise ValueError(f"{path}: has {len(lines)} lines, {COUNTS_FILE} expects "
                     f"{expected}")
  pairs = []
  for i, line in enumerate(lines):
    cols = line.split("\t")
    if len(cols) != 2:
      raise ValueError(f"{path}:{i + 1}: expected 2 tab-separated columns, "
                       f"got {len(cols)}")
    pairs.append((cols[0], cols[1]))
  sha = counts[rel].get("sha256")
  if sha and hashlib.sha256(raw).hexdigest() != sha:
    raise ValueError(f"{path}: sha256 does not match {COUNTS_FILE}")
  return pairs


def vocab_path() -> str:
  """VOCAB_PATH, or a ValueError naming it when the committed model is missing."""
  if not os.path.exists(VOCAB_PATH):
    raise ValueError(f"missing vocabulary {VOCAB_PATH}; run "
                     "scripts/train_vocab.py")
  return VOCAB_PATH


class Vocabulary:
  """A SentencePiece model read with sentencepiece alone (no seqio, no tensorflow).

  Its `encode`/`decode` give what `seqio.SentencePieceVocabulary` gives for the same
  model (no extra ids): `decode` stops after the first EOS and maps ids at or above
  `vocab_size` to UNK. `processor` is the underlying `SentencePieceProcessor`.
  """

  def __init__(self, path: str):
    import sentencepiece  # pylint: disable=g-import-not-at-top
    if not os.path.exists(path):
      raise ValueError(f"missing vocabulary {path}")
    self.path = path
    self.processor = sentencepiece.SentencePieceProcessor(model_file=path)

  @property
  def vocab_size(self) -> int:
    return self.processor.piece_size()

  @property
  def pad_id(self) -> int:
    return self.processor.pad_id()

  @property
  def eos_id(self) -> int:
    return self.processor.eos_id()

  @property
  def unk_id(self) -> int:
    return self.processor.unk_id()

  def encode(self, text: str) -> List[int]:
    """One string -> its token ids (no EOS appended)."""
    if not isinstance(text, str):
      raise TypeError(f"text must be a str, got {type(text).__name__}")
    return self.processor.EncodeAsIds(text)

  def decode(self, ids: Sequence[int]) -> str:
    """Token ids -> one string, through the first EOS (pad and EOS decode to nothing)."""
    ids = [int(i) for i in ids]
    ids = [self.unk_id if i >= self.vocab_size else i for i in ids]
    if self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id) + 1]
    return self.processor.DecodeIds(ids)

  def __repr__(self) -> str:
    return f"Vocabulary({self.path!r}, vocab_size={self.vocab_size})"


@functools.lru_cache(maxsize=None)
def vocabulary() -> Vocabulary:
  """The committed SentencePiece vocabulary (T5 ids: pad 0, eos 1, unk 2), without seqio;
  `specdec.tasks.vocabulary()` is the same model as a `seqio.SentencePieceVocabulary`."""
  return Vocabulary(vocab_path())


# ---------------------------------------------------------------------------
# Metrics (seqio metric_fn signature: (targets, predictions) -> dict).


def bleu(targets: Sequence[str], predictions: Sequence[str]) -> Dict[str, float]:
  """Corpus BLEU (sacrebleu defaults, 13a tokenisation), 0..100."""
  import sacrebleu  # pylint: disable=g-import-not-at-top
  targets = [str(t) for t in targets]
  predictions = [str(p) for p in predictions]
  if len(targets) != len(predictions):
    raise ValueError(f"{len(targets)} targets but {len(predictions)} "
                     "predictions")
  score = sacrebleu.corpus_bleu(predictions, [targets])
  return {"bleu": float(score.score)}


def rouge(targets: Sequence[str], predictions: Sequence[str]) -> Dict[str, float]:
  """Mean ROUGE-1/2/Lsum F-measure (rouge-score, with stemming), 0..100."""
  from rouge_score import rouge_scorer  # pylint: disable=g-import-not-at-top
  if len(targets) != len(predictions):
    raise ValueError(f"{len(targets)} targets but {len(predictions)} "
                     "predictions")
  types = ["rouge1", "rouge2", "rougeLsum"]
  scorer = rouge_scorer.RougeScorer(types, use_stemmer=True)
  totals = {k: 0.0 for k in types}
  for t, p in zip(targets, predictions):
    scores = scorer.score(str(t), str(p))
    for k in types:
      totals[k] += scores[k].fmeasure
  n = max(1, len(targets))
  # Plain mean (deterministic, unlike the bootstrap aggregator).
  return {k: 100.0 * v / n for k, v in totals.items()}
