#!/usr/bin/env python3
"""Trains the 4k SentencePiece unigram vocabulary on the committed train splits.

Sentences: both sides of wmt_style_ende/train and debian_summarize/train
(built by scripts/build_data.py). A deterministic sample (the lines with the
smallest sha256) of at most --max_sentences is used; training is single
threaded without input shuffling, so the output is reproducible.

T5 ids: pad=0, eos=1, unk=2, no bos. Normalisation is ``identity`` (the data is
already NFC / whitespace normalised) so that decode(encode(s)) == s.

Usage::

  python scripts/train_vocab.py
"""

import argparse
import gzip
import hashlib
import os
import shutil
import sys
import tempfile

import sentencepiece as spm

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(REPO_ROOT, "specdec", "assets", "data")
DEFAULT_OUT = os.path.join(REPO_ROOT, "specdec", "assets", "vocab", "spm_4k")
TRAIN_FILES = ("wmt_style_ende/train.tsv.gz", "debian_summarize/train.tsv.gz")


def collect(data_dir, max_sentences, max_chars):
  lines = set()
  for rel in TRAIN_FILES:
    with gzip.open(os.path.join(data_dir, rel), "rt", encoding="utf-8") as f:
      for line in f:
        for col in line.rstrip("\n").split("\t"):
          if col and len(col) <= max_chars:
            lines.add(col)
  keyed = sorted((hashlib.sha256(s.encode("utf-8")).hexdigest(), s)
                 for s in lines)
  return [s for _, s in keyed[:max_sentences]], len(lines)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__)
  ap.add_argument("--data_dir", default=DATA_DIR)
  ap.add_argument("--model_prefix", default=DEFAULT_OUT)
  ap.add_argument("--vocab_size", type=int, default=4096)
  ap.add_argument("--max_sentences", type=int, default=120000)
  ap.add_argument("--max_chars", type=int, default=2000)
  args = ap.parse_args(argv)

  sents, total = collect(args.data_dir, args.max_sentences, args.max_chars)
  print(f"{total} unique texts, training on {len(sents)}", flush=True)
  os.makedirs(os.path.dirname(os.path.abspath(args.model_prefix)),
              exist_ok=True)
  with tempfile.TemporaryDirectory() as tmp:
    # Train with relative paths inside tmp: the trainer stores its input path
    # and model prefix in the model, which would make the output depend on
    # the (random) temp dir and on the output location.
    with open(os.path.join(tmp, "sentences.txt"), "w", encoding="utf-8") as f:
      for s in sents:
        f.write(s + "\n")
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
      spm.SentencePieceTrainer.train(
          input="sentences.txt",
          model_prefix="spm",
          model_type="unigram",
          vocab_size=args.vocab_size,
          character_coverage=1.0,
          normalization_rule_name="identity",
          pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
          input_sentence_size=len(sents),
          shuffle_input_sentence=False,
          max_sentence_length=8192,
          num_threads=1,
          seed_sentencepiece_size=400000,
          minloglevel=1,
      )
    finally:
      os.chdir(cwd)
    shutil.copyfile(os.path.join(tmp, "spm.model"),
                    args.model_prefix + ".model")
  model = args.model_prefix + ".model"
  sp = spm.SentencePieceProcessor(model_file=model)
  assert sp.get_piece_size() == args.vocab_size, sp.get_piece_size()
  assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
  with open(model, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  print(f"wrote {model} ({os.path.getsize(model)} bytes, sha256 {digest})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
