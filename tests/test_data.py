"""Tests for the committed corpora, vocabulary, seqio tasks and metrics."""

import gzip
import os
import shutil
import sys

# Allow `pytest tests/test_data.py` from the repo root without installing.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402

from specdec import data  # noqa: E402

TASKS = ("specdec_ende", "specdec_summarize")


@pytest.fixture(scope="module")
def tasks():
  from specdec import tasks as tasks_lib  # pylint: disable=g-import-not-at-top
  return tasks_lib


def test_core_never_imports_tensorflow():
  """import specdec, loading the shipped pair, encode/decode, generate and speculative_generate
  need neither seqio nor tensorflow (a fresh process: this one has imported them)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  code = ("import sys, specdec, specdec.data, specdec.pretrained as p\n"
          "pair = p.load('ende')\n"
          "x = pair.encode(['The file is saved.'])\n"
          "out = specdec.speculative_generate(pair.target, pair.draft, x, gamma=1, "
          "max_decode_len=2)\n"
          "base = specdec.generate(pair.target, x, max_decode_len=2)\n"
          "assert pair.decode(out.tokens) == pair.decode(base.tokens)\n"
          "bad = [m for m in ('tensorflow', 'seqio') if m in sys.modules]\n"
          "assert not bad, bad\n")
  root = os.path.dirname(os.path.dirname(os.path.abspath(data.__file__)))
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("SPECDEC_CHECKPOINT_DIR", None)
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (root, env.get("PYTHONPATH")) if p)
  proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=root,
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("task_name", TASKS)
@pytest.mark.parametrize("split", data.SPLITS)
def test_read_pairs_counts(task_name, split):
  pairs = data.read_pairs(task_name, split)
  assert len(pairs) == data.num_examples(task_name, split)
  assert len(pairs) >= 900
  for src, tgt in pairs[:200]:
    assert src and tgt and src.strip() == src and "\t" not in src + tgt


@pytest.mark.parametrize("task_name", TASKS)
def test_no_source_in_two_splits(task_name):
  sources = {s: {data.normalize_source(a) for a, _ in
                 data.read_pairs(task_name, s)} for s in data.SPLITS}
  assert not sources["train"] & sources["validation"]
  assert not sources["train"] & sources["test"]
  assert not sources["validation"] & sources["test"]


@pytest.mark.parametrize("task_name", TASKS)
def test_task_validation_dataset(tasks, task_name):
  task = tasks.get_task(task_name)
  ds = task.get_dataset(sequence_length=None, split="validation",
                        shuffle=False)
  examples = list(ds.as_numpy_iterator())
  assert len(examples) == data.num_examples(task_name, "validation")
  ex = examples[0]
  assert ex["inputs"][-1] == 1 and ex["targets"][-1] == 1  # EOS appended
  prefix = data.TASK_PREFIXES[task_name]
  assert ex["inputs_pretokenized"].decode().startswith(prefix)
  vocab = data.vocabulary()
  assert vocab.decode(ex["targets"].tolist()) == (
      ex["targets_pretokenized"].decode())


def test_task_truncation_keeps_eos(tasks):
  task = tasks.get_task("specdec_summarize")
  ds = task.get_dataset(sequence_length={"inputs": 16, "targets": 8},
                        split="test", shuffle=False)
  for ex in ds.take(20).as_numpy_iterator():
    assert len(ex["inputs"]) <= 16 and ex["inputs"][-1] == 1
    assert len(ex["targets"]) <= 8 and ex["targets"][-1] == 1


def test_registration_idempotent_and_mixture(tasks):
  import importlib  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top
  tasks.register()
  importlib.reload(tasks)
  mix = tasks.get_task("specdec_all")
  assert sorted(t.name for t in mix.tasks) == sorted(TASKS)
  assert isinstance(seqio.get_mixture_or_task("specdec_ende"), seqio.Task)


def test_unknown_task(tasks):
  with pytest.raises(ValueError, match="specdec_ende"):
    tasks.get_task("no_such_task")
  with pytest.raises(ValueError):
    data.read_pairs("no_such_task", "train")


def test_vocabulary():
  vocab = data.vocabulary()
  assert vocab.eos_id == 1
  assert vocab.pad_id == 0
  assert vocab.unk_id == 2
  assert vocab.vocab_size == 4096
  for s in [
      "This package contains the development files for the library.",
      "Choose Format - Cells to open the dialog.",
      "Die Symbolleisten sind frei konfigurierbar.",
      "Ich würde es wieder tun, aber nur für „Größe“ und Übermaß.",
      "Python interface to the GPGME GnuPG encryption library (Python 3)",
  ]:
    ids = vocab.encode(s)
    assert data.UNK_ID not in ids
    assert vocab.decode(ids) == s


def test_vocabulary_without_seqio_is_seqios(tasks):
  """data.vocabulary() (sentencepiece alone) encodes and decodes as seqio's vocabulary of the
  same model (tasks.vocabulary()), including ids after EOS and ids past the vocabulary;
  training.tokenizer() is its processor."""
  from specdec import training  # pylint: disable=g-import-not-at-top
  mine, seqios = data.vocabulary(), tasks.vocabulary()
  assert (mine.vocab_size, mine.pad_id, mine.eos_id, mine.unk_id) == (
      seqios.vocab_size, seqios.pad_id, seqios.eos_id, seqios.unk_id)
  for text in ["Choose Format - Cells to open the dialog.", "Übermaß „Größe“ 3 Dateien.", ""]:
    assert mine.encode(text) == list(seqios.encode(text))
  for ids in ([5, 6, 1, 7, 8], [0, 0, 300, 2], [4095, 4096, 9999], [1], []):
    assert mine.decode(ids) == seqios.decode(ids), ids
  assert training.tokenizer() is mine.processor
  with pytest.raises(TypeError, match="text"):
    mine.encode(["a list"])
  with pytest.raises(ValueError, match="nope.model"):
    data.Vocabulary("/nonexistent/nope.model")


def _corrupt_copy(tmp_path, rel, drop_lines=1):
  """Copies the data dir's COUNTS.json and one file, minus some lines."""
  tmp_data = tmp_path / "data"
  (tmp_data / os.path.dirname(rel)).mkdir(parents=True)
  shutil.copy(os.path.join(data.DATA_DIR, data.COUNTS_FILE),
              tmp_data / data.COUNTS_FILE)
  with gzip.open(os.path.join(data.DATA_DIR, rel), "rt",
                 encoding="utf-8") as f:
    lines = f.readlines()
  with gzip.open(tmp_data / rel, "wt", encoding="utf-8") as f:
    f.writelines(lines[drop_lines:])
  return tmp_data


def test_wrong_line_count_raises(tmp_path, monkeypatch):
  rel = "wmt_style_ende/validation.tsv.gz"
  monkeypatch.setattr(data, "DATA_DIR", str(_corrupt_copy(tmp_path, rel)))
  with pytest.raises(ValueError, match="validation.tsv.gz"):
    data.read_pairs("specdec_ende", "validation")


def test_missing_file_and_bad_columns_raise(tmp_path, monkeypatch):
  rel = "debian_summarize/test.tsv.gz"
  tmp_data = _corrupt_copy(tmp_path, rel, drop_lines=0)
  monkeypatch.setattr(data, "DATA_DIR", str(tmp_data))
  with pytest.raises(ValueError, match="validation.tsv.gz"):
    data.read_pairs("specdec_summarize", "validation")  # missing
  with gzip.open(tmp_data / rel, "rt", encoding="utf-8") as f:
    lines = f.readlines()
  lines[3] = lines[3].replace("\t", " ")
  with gzip.open(tmp_data / rel, "wt", encoding="utf-8") as f:
    f.writelines(lines)
  with pytest.raises(ValueError, match="test.tsv.gz"):
    data.read_pairs("specdec_summarize", "test")


def test_bleu():
  refs = ["Das ist ein kleiner Test.", "Die Katze sitzt auf der Matte."]
  assert data.bleu(refs, refs)["bleu"] == pytest.approx(100.0)
  hyp = ["Das ist ein großer Test.", "Die Katze sitzt auf der Matte."]
  assert 0.0 < data.bleu(refs, hyp)["bleu"] < 100.0


def test_rouge():
  refs = ["library for converting characters to X key-presses"]
  scores = data.rouge(refs, refs)
  assert set(scores) == {"rouge1", "rouge2", "rougeLsum"}
  assert all(v == pytest.approx(100.0) for v in scores.values())
  assert data.rouge(refs, ["a GTK theme"])["rouge1"] < 100.0
