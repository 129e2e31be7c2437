#!/usr/bin/env python3
"""Builds the committed EN->DE translation and EN summarization corpora.

All inputs come from Debian bookworm (main):

* ``libreoffice-help-en-us`` / ``libreoffice-help-de`` (MPL-2.0): the HTML help
  pages, paired by (file, paragraph id).
* ``trans-de-en`` (Ding dictionary, GPL-2+): example sentence pairs.
* ``dists/bookworm/main/i18n/Translation-{en,de}`` (package descriptions /
  DDTP): synopsis + paragraph-aligned long descriptions joined on
  ``Description-md5``; the English index alone gives
  long-description -> synopsis summarization pairs.

Outputs (under ``--out_dir``, default ``specdec/assets/data``)::

  wmt_style_ende/{train,validation,test}.tsv.gz      english \\t german
  debian_summarize/{train,validation,test}.tsv.gz    long_description \\t synopsis
  COUNTS.json                                        line counts + sha256
  LICENSES.md                                        provenance

Everything is deterministic: inputs are read in sorted order, splits are made
by sha256 of the normalised source text, gzip is written with mtime=0.

Usage (as root, needs the Debian archive)::

  python scripts/build_data.py --work_dir /tmp/specdec_build

To rebuild from already fetched inputs (no apt access) pass ``--skip_fetch``
with the same ``--work_dir``.

``scripts/build_l10n_data.py`` adds ``wmt_style_ende/train_l10n.tsv.gz`` (extra
train pairs, de-duplicated against these splits): its COUNTS.json entry and its
LICENSES.md section are kept when this script rewrites those files; rerun it
after this one whenever the splits change.
"""

import argparse
import collections
import gzip
import hashlib
import html.parser
import io
import json
import os
import re
import subprocess
import sys
import unicodedata

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "specdec", "assets", "data")

# Versions the committed data was built from. Other versions can be used with
# --allow_other_versions (the resulting files will differ).
PACKAGES = {
    "libreoffice-help-en-us": "4:7.4.7-1+deb12u14",
    "libreoffice-help-de": "4:7.4.7-1+deb12u14",
    "trans-de-en": "1.9-6",
}
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"

ENDE_TASK_DIR = "wmt_style_ende"
SUM_TASK_DIR = "debian_summarize"
SPLITS = ("train", "validation", "test")

# Expected number of pairs per source after filtering (before cross-source
# dedup). The build fails if a source is outside its range.
EXPECTED = {
    "libreoffice": (20000, 40000),   # built: 27710
    "ding": (15000, 30000),          # built: 20128
    "debian_ende": (22000, 45000),   # built: 31583
    "summarize": (45000, 80000),     # built: 60313
}

N_VALID = 1000
N_TEST = 1000

# LICENSES.md section owned by scripts/build_l10n_data.py (kept on a rewrite).
L10N_BEGIN = "<!-- begin l10n (written by scripts/build_l10n_data.py) -->"
L10N_END = "<!-- end l10n -->"


# --------------------------------------------------------------------------
# Text helpers.


def clean(text):
  """Normalises whitespace (NFC, single spaces, no tabs/newlines)."""
  text = unicodedata.normalize("NFC", text)
  text = text.replace("\u00a0", " ").replace("\u200b", "")
  text = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c
                 for c in text)
  return re.sub(r"\s+", " ", text).strip()


def normalize_source(text):
  """Normalisation used for de-duplication and for the split hash."""
  text = unicodedata.normalize("NFKC", text).lower()
  text = re.sub(r"[^\w\s]", "", text)
  return re.sub(r"\s+", " ", text).strip()


def source_hash(text):
  return hashlib.sha256(normalize_source(text).encode("utf-8")).hexdigest()


def n_words(text):
  return len(text.split())


def good_translation_pair(en, de, min_words=3, max_words=80, max_ratio=3.0):
  if not en or not de or "\t" in en or "\t" in de:
    return False
  a, b = n_words(en), n_words(de)
  if not (min_words <= a <= max_words and min_words <= b <= max_words):
    return False
  if max(a, b) / min(a, b) > max_ratio:
    return False
  if max(len(en), len(de)) / max(1, min(len(en), len(de))) > max_ratio:
    return False
  if normalize_source(en) == normalize_source(de):  # untranslated
    return False
  if not re.search(r"[A-Za-z]", en):
    return False
  return True


# --------------------------------------------------------------------------
# Fetching.


def run(cmd, **kw):
  print("+", " ".join(cmd), flush=True)
  return subprocess.run(cmd, check=True, **kw)


def fetch(work_dir, allow_other_versions):
  debs = os.path.join(work_dir, "debs")
  os.makedirs(debs, exist_ok=True)
  specs = [p if allow_other_versions else f"{p}={v}"
           for p, v in sorted(PACKAGES.items())]
  run(["apt-get", "download"] + specs, cwd=debs)
  lists = os.path.join(work_dir, "lists")
  os.makedirs(os.path.join(lists, "partial"), exist_ok=True)
  parts = os.path.join(work_dir, "sources.list.d")
  os.makedirs(parts, exist_ok=True)
  sources = os.path.join(work_dir, "sources.list")
  with open(sources, "w") as f:
    f.write(f"deb {MIRROR} {SUITE} main\n")
  run(["apt-get", "update",
       f"-oDir::Etc::SourceList={sources}",
       f"-oDir::Etc::SourceParts={parts}",
       f"-oDir::State::Lists={lists}",
       "-oAcquire::Languages=en,de",
       "-oAcquire::IndexTargets::deb::Packages::DefaultEnabled=false",
       "-oAcquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false"])


def find_one(directory, pattern):
  hits = sorted(f for f in os.listdir(directory) if re.search(pattern, f))
  if len(hits) != 1:
    raise SystemExit(f"expected exactly one file matching {pattern!r} in "
                     f"{directory}, found {hits}")
  return os.path.join(directory, hits[0])


def extract(work_dir):
  """Extracts the debs; returns {package: (version, root_dir, deb_sha256)}."""
  debs = os.path.join(work_dir, "debs")
  out = {}
  for pkg in sorted(PACKAGES):
    deb = find_one(debs, "^" + re.escape(pkg) + "_.*\\.deb$")
    version = subprocess.run(["dpkg-deb", "-f", deb, "Version"], check=True,
                             capture_output=True, text=True).stdout.strip()
    root = os.path.join(work_dir, "extract", pkg)
    if not os.path.isdir(root):
      os.makedirs(root)
      run(["dpkg-deb", "-x", deb, root])
    out[pkg] = (version, root, sha256_file(deb))
  return out


def read_translation_index(work_dir, lang):
  lists = os.path.join(work_dir, "lists")
  path = find_one(lists, f"_{SUITE}_main_i18n_Translation-{lang}(\\.[a-z0-9]+)?$")
  data = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", path],
                        check=True, capture_output=True).stdout
  return data.decode("utf-8"), hashlib.sha256(data).hexdigest()


def release_date(work_dir):
  lists = os.path.join(work_dir, "lists")
  path = find_one(lists, f"_{SUITE}_InRelease$")
  info = {}
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      m = re.match(r"^(Version|Date): (.*)$", line)
      if m and m.group(1) not in info:
        info[m.group(1)] = m.group(2).strip()
  return info


def sha256_file(path):
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


# --------------------------------------------------------------------------
# LibreOffice help.

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link",
         "meta", "param", "source", "track", "wbr"}
_SKIP_CLASSES = {"howtoget", "debug", "bascode", "pycode", "code",
                 "MAC", "relatedtopics", "related"}
_SKIP_TAGS = {"script", "style", "header", "footer", "aside", "pre", "head",
              "noscript", "title"}
_PARA_ID = re.compile(r"^(par_id|hd_id)[0-9a-zA-Z_]*$")


class _HelpParser(html.parser.HTMLParser):
  """Collects the text of every element carrying a par_id/hd_id id."""

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.stack = []  # (tag, skip, para_id)
    self.paras = collections.OrderedDict()
    self.buffers = []  # [(para_id, list_of_text)] for open paragraphs

  def _skipping(self):
    return any(s for _, s, _ in self.stack)

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag in _VOID:
      if tag == "br" and self.buffers:
        self.buffers[-1][1].append(" ")
      return
    classes = set((attrs.get("class") or "").split())
    elem_id = attrs.get("id") or ""
    skip = (tag in _SKIP_TAGS or bool(classes & _SKIP_CLASSES) or
            elem_id == "DEBUG" or
            # Platform / application switches: keep only the default text.
            ("hidden" in attrs and not elem_id.startswith("default")))
    para = None
    if _PARA_ID.match(elem_id) and not self._skipping() and not skip:
      para = elem_id
      self.buffers.append((para, []))
    self.stack.append((tag, skip, para))

  def handle_endtag(self, tag):
    if tag in _VOID:
      return
    # Pop up to and including the matching tag (tolerates unclosed tags).
    idx = None
    for i in range(len(self.stack) - 1, -1, -1):
      if self.stack[i][0] == tag:
        idx = i
        break
    if idx is None:
      return
    while len(self.stack) > idx:
      _, _, para = self.stack.pop()
      if para is not None:
        pid, parts = self.buffers.pop()
        text = clean("".join(parts))
        if self.buffers:  # nested paragraph: also counts for the parent
          self.buffers[-1][1].append(" " + "".join(parts) + " ")
        if pid not in self.paras:
          self.paras[pid] = text
        else:
          self.paras[pid] = None  # ambiguous id, drop

  def handle_data(self, data):
    if self.buffers and not self._skipping():
      self.buffers[-1][1].append(data)


def parse_help_file(path):
  parser = _HelpParser()
  with open(path, encoding="utf-8") as f:
    parser.feed(f.read())
  parser.close()
  return {k: v for k, v in parser.paras.items() if v}


_MENU_PATH = re.compile(r"^[\w .…&/()-]+( - [\w .…&/()-]+)+\.?$")


def libreoffice_pairs(en_root, de_root):
  en_help = os.path.join(en_root, "usr/share/libreoffice/help/en-US")
  de_help = os.path.join(de_root, "usr/share/libreoffice/help/de")
  files = []
  for d, _, fs in os.walk(en_help):
    for f in fs:
      if f.endswith(".html"):
        files.append(os.path.relpath(os.path.join(d, f), en_help))
  files.sort()
  pairs = []
  stats = collections.Counter()
  for rel in files:
    de_path = os.path.join(de_help, rel)
    if not os.path.exists(de_path):
      stats["missing_de_file"] += 1
      continue
    en_p = parse_help_file(os.path.join(en_help, rel))
    de_p = parse_help_file(de_path)
    for pid in sorted(set(en_p) & set(de_p)):
      en, de = en_p[pid], de_p[pid]
      stats["aligned"] += 1
      if "debug info" in en.lower() or _MENU_PATH.match(en):
        stats["menu_or_debug"] += 1
        continue
      # UI labels / headings of 2 words are kept for this source.
      if not good_translation_pair(en, de, min_words=2):
        stats["filtered"] += 1
        continue
      pairs.append((en, de))
  print("libreoffice:", dict(stats), flush=True)
  return pairs


# --------------------------------------------------------------------------
# Ding.

_DING_ANNOT = re.compile(r"\s*(\{[^}]*\}|\[[^\]]*\])")
_SENT_END = re.compile(r"[.!?…]['\"’”»«)]*$")


def _ding_alternatives(text):
  text = _DING_ANNOT.sub("", text)
  return [clean(a) for a in re.split(r";\s+", text) if clean(a)]


def _is_sentence(text):
  return n_words(text) >= 4 and bool(_SENT_END.search(text))


def ding_pairs(root):
  path = os.path.join(root, "usr/share/trans/de-en")
  pairs = []
  stats = collections.Counter()
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.startswith("#") or " :: " not in line:
        continue
      de_side, en_side = line.rstrip("\n").split(" :: ", 1)
      des, ens = de_side.split(" | "), en_side.split(" | ")
      if len(des) != len(ens):
        stats["unaligned_entry"] += 1
        continue
      for d, e in zip(des, ens):
        da, ea = _ding_alternatives(d), _ding_alternatives(e)
        if not da or not ea:
          continue
        if len(da) == len(ea):
          cand = list(zip(ea, da))
        elif len(da) == 1 or len(ea) == 1:
          cand = [(ea[0], da[0])]
        else:
          continue
        for en, de in cand:
          if not (_is_sentence(en) and _is_sentence(de)):
            continue
          stats["sentences"] += 1
          if not good_translation_pair(en, de, min_words=4):
            stats["filtered"] += 1
            continue
          pairs.append((en, de))
  print("ding:", dict(stats), flush=True)
  return pairs


# --------------------------------------------------------------------------
# Debian descriptions.


def parse_translation_index(text, lang):
  """Returns {md5: (synopsis, [paragraphs])} (first occurrence wins)."""
  field = f"Description-{lang}"
  out = {}
  for stanza in text.split("\n\n"):
    md5, desc_lines, in_desc = None, [], False
    for line in stanza.split("\n"):
      if line.startswith("Description-md5:"):
        md5 = line.split(":", 1)[1].strip()
        in_desc = False
      elif line.startswith(field + ":"):
        desc_lines = [line.split(":", 1)[1]]
        in_desc = True
      elif line.startswith(" ") and in_desc:
        desc_lines.append(line)
      else:
        in_desc = False
    if not md5 or not desc_lines or md5 in out:
      continue
    synopsis = clean(desc_lines[0])
    paragraphs, cur = [], []
    for line in desc_lines[1:]:
      if line.strip() == ".":
        paragraphs.append(cur)
        cur = []
      else:
        cur.append(line)
    paragraphs.append(cur)
    paras = []
    for p in paragraphs:
      # Strip list bullets of verbatim lines, join into one line.
      p = [re.sub(r"^\s+([*+o-]|\d+[.)])\s+", " ", l) for l in p]
      t = clean(" ".join(p))
      if t:
        paras.append(t)
    out[md5] = (synopsis, paras)
  return out


def debian_pairs(en_idx, de_idx):
  pairs = []
  stats = collections.Counter()
  for md5 in sorted(set(en_idx) & set(de_idx)):
    (en_syn, en_par), (de_syn, de_par) = en_idx[md5], de_idx[md5]
    cand = [(en_syn, de_syn)]
    if len(en_par) == len(de_par):
      cand += list(zip(en_par, de_par))
    else:
      stats["paragraph_count_mismatch"] += 1
    for en, de in cand:
      stats["candidates"] += 1
      # Synopses are short; allow 2 words for them.
      if not good_translation_pair(en, de, min_words=2 if en == en_syn else 3):
        stats["filtered"] += 1
        continue
      pairs.append((en, de))
  stats["joined_descriptions"] = len(set(en_idx) & set(de_idx))
  print("debian_ende:", dict(stats), flush=True)
  return pairs


def summarize_pairs(en_idx, min_words=10, max_words=300):
  pairs = []
  stats = collections.Counter()
  for md5 in sorted(en_idx):
    syn, paras = en_idx[md5]
    long = clean(" ".join(paras))
    stats["descriptions"] += 1
    if not (min_words <= n_words(long) <= max_words) or n_words(syn) < 2:
      stats["filtered_length"] += 1
      continue
    if "\t" in long or "\t" in syn:
      stats["filtered_tab"] += 1
      continue
    pairs.append((long, syn))
  print("summarize:", dict(stats), flush=True)
  return pairs


# --------------------------------------------------------------------------
# Splitting and writing.


def dedup(pairs):
  seen = set()
  out = []
  for src, tgt in pairs:
    key = (normalize_source(src), normalize_source(tgt))
    if key in seen:
      continue
    seen.add(key)
    out.append((src, tgt))
  return out


def split_pairs(pairs, n_valid, n_test, max_train=None):
  """Splits by rank of sha256(normalised source); a source stays in one split."""
  by_hash = collections.defaultdict(list)
  for src, tgt in pairs:
    by_hash[source_hash(src)].append((src, tgt))
  hashes = sorted(by_hash)
  groups = {
      "validation": hashes[:n_valid],
      "test": hashes[n_valid:n_valid + n_test],
      "train": hashes[n_valid + n_test:],
  }
  out = {}
  for split, hs in groups.items():
    rows = []
    for h in hs:
      rows.extend(sorted(by_hash[h]))
    if split == "train" and max_train is not None:
      rows = rows[:max_train]
    out[split] = rows
  return out


def write_tsv_gz(path, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  payload = "".join(f"{a}\t{b}\n" for a, b in rows).encode("utf-8")
  buf = io.BytesIO()
  # filename="" and mtime=0 make the output byte-reproducible.
  with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0,
                     compresslevel=9) as g:
    g.write(payload)
  with open(path, "wb") as f:
    f.write(buf.getvalue())


def check_range(name, n):
  lo, hi = EXPECTED[name]
  status = "ok" if lo <= n <= hi else "OUT OF RANGE"
  print(f"  {name:12s} {n:7d} pairs  (expected {lo}..{hi}) {status}",
        flush=True)
  return lo <= n <= hi


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--work_dir", default="/tmp/specdec_build",
                  help="Scratch dir for debs, apt lists and extracted files.")
  ap.add_argument("--out_dir", default=DEFAULT_OUT)
  ap.add_argument("--skip_fetch", action="store_true",
                  help="Reuse debs/lists already in --work_dir.")
  ap.add_argument("--allow_other_versions", action="store_true",
                  help="Download the candidate versions instead of the pinned "
                  "ones.")
  ap.add_argument("--max_summarize_train", type=int, default=50000,
                  help="Cap on summarization train pairs (first N by hash).")
  ap.add_argument("--no_check", action="store_true",
                  help="Do not fail when a source is out of its expected range.")
  args = ap.parse_args(argv)

  os.makedirs(args.work_dir, exist_ok=True)
  if not args.skip_fetch:
    fetch(args.work_dir, args.allow_other_versions)
  pkgs = extract(args.work_dir)
  for pkg, (version, _, _) in pkgs.items():
    if version != PACKAGES[pkg] and not args.allow_other_versions:
      raise SystemExit(f"{pkg}: got version {version}, expected "
                       f"{PACKAGES[pkg]} (use --allow_other_versions)")
  en_text, en_sha = read_translation_index(args.work_dir, "en")
  de_text, de_sha = read_translation_index(args.work_dir, "de")
  release = release_date(args.work_dir)

  lo = libreoffice_pairs(pkgs["libreoffice-help-en-us"][1],
                         pkgs["libreoffice-help-de"][1])
  ding = ding_pairs(pkgs["trans-de-en"][1])
  en_idx = parse_translation_index(en_text, "en")
  de_idx = parse_translation_index(de_text, "de")
  deb = debian_pairs(en_idx, de_idx)
  summ = summarize_pairs(en_idx)

  per_source = {"libreoffice": len(dedup(lo)), "ding": len(dedup(ding)),
                "debian_ende": len(dedup(deb)), "summarize": len(dedup(summ))}
  print("Pairs per source (after filters, de-duplicated within source):")
  ok = all([check_range(k, v) for k, v in per_source.items()])
  if not ok and not args.no_check:
    raise SystemExit("a source yielded an unexpected number of pairs; "
                     "inspect the inputs (or pass --no_check)")

  ende = dedup(sorted(lo) + sorted(ding) + sorted(deb))
  summ = dedup(sorted(summ))
  splits = {
      ENDE_TASK_DIR: split_pairs(ende, N_VALID, N_TEST),
      SUM_TASK_DIR: split_pairs(summ, N_VALID, N_TEST,
                                max_train=args.max_summarize_train),
  }

  counts = {"_comment": "Exact line counts and sha256 of the committed files; "
                        "checked by specdec.data.read_pairs. Generated by "
                        "scripts/build_data.py."}
  for task, parts in splits.items():
    srcs = {s: {normalize_source(a) for a, _ in rows}
            for s, rows in parts.items()}
    for a in SPLITS:
      for b in SPLITS:
        if a < b and srcs[a] & srcs[b]:
          raise SystemExit(f"{task}: source overlap between {a} and {b}")
    for split in SPLITS:
      rows = parts[split]
      rel = f"{task}/{split}.tsv.gz"
      path = os.path.join(args.out_dir, rel)
      write_tsv_gz(path, rows)
      counts[rel] = {"lines": len(rows), "sha256": sha256_file(path)}
      print(f"  {rel:40s} {len(rows):7d} lines "
            f"{os.path.getsize(path) / 1e6:6.2f} MB", flush=True)
  counts_path = os.path.join(args.out_dir, "COUNTS.json")
  if os.path.exists(counts_path):  # Keep the entries of files other scripts write.
    with open(counts_path) as f:
      for key, value in json.load(f).items():
        counts.setdefault(key, value)
  with open(counts_path, "w") as f:
    json.dump(counts, f, indent=2, sort_keys=True)
    f.write("\n")

  write_licenses(os.path.join(args.out_dir, "LICENSES.md"), pkgs, release,
                 en_sha, de_sha, per_source, args)
  total = sum(os.path.getsize(os.path.join(d, f))
              for d, _, fs in os.walk(args.out_dir) for f in fs)
  print(f"total size of {args.out_dir}: {total / 1e6:.2f} MB")
  return 0


def write_licenses(path, pkgs, release, en_sha, de_sha, per_source, args):
  v = {p: pkgs[p][0] for p in pkgs}
  sha = {p: pkgs[p][2] for p in pkgs}
  text = f"""# Data provenance and licenses

All files under this directory were generated by `scripts/build_data.py` from
Debian 12 "bookworm" (main) and are redistributed under the licenses of their
sources. Pair counts per source (after filtering, before cross-source
de-duplication): {json.dumps(per_source, sort_keys=True)}.

## wmt_style_ende (English \\t German)

| Source | Debian package / file | Version | License |
|---|---|---|---|
| LibreOffice help pages, paragraphs paired by (file, `par_id`/`hd_id`) | `libreoffice-help-en-us`, `libreoffice-help-de` | {v['libreoffice-help-en-us']} / {v['libreoffice-help-de']} | MPL-2.0 |
| Ding dictionary example sentences (subentries with >= 4 words ending in punctuation on both sides) | `trans-de-en` | {v['trans-de-en']} | GPL-2+ |
| Debian package descriptions (synopsis + paragraph-aligned long descriptions), joined on `Description-md5` | `dists/bookworm/main/i18n/Translation-en`, `Translation-de` (Release {release.get('Version', '?')}, {release.get('Date', '?')}) | sha256 (decompressed) en `{en_sha}`, de `{de_sha}` | license of each package; translations by the Debian Description Translation Project (DDTP) |

## debian_summarize (long description \\t synopsis)

English package descriptions from the same `Translation-en` index: input is the
long description joined into one line (list bullets removed), target the
one-line synopsis. License: that of each described package (descriptions are
part of the packages' `debian/control`). The train split is capped at
{args.max_summarize_train} pairs (the first by hash).

## How the files were built

```
sudo python scripts/build_data.py --work_dir /tmp/specdec_build
```

(runs `apt-get download {' '.join(f'{p}={q}' for p, q in sorted(PACKAGES.items()))}`
and `apt-get update` into a private lists directory with
`Acquire::Languages=en,de` for `deb {MIRROR} {SUITE} main`, then
`/usr/lib/apt/apt-helper cat-file` to decompress the indexes.)
Re-running with `--skip_fetch` on the same inputs (sha256 above) reproduces the
files byte for byte. A later bookworm point release changes the
`Translation-*` indexes (and possibly the LibreOffice security upload), and so
the files; `COUNTS.json` then has to be regenerated with them (the script
writes it). The vocabulary `../vocab/spm_4k.model` is trained on the train
splits by `python scripts/train_vocab.py`.

Deb sha256: {', '.join(f'`{p}` {sha[p]}' for p in sorted(sha))}.

Processing: HTML markup stripped (platform switches keep the default text,
"To access this command" menu-path blocks, code blocks and the "Help content
debug info" footer dropped), whitespace normalised (NFC), pairs with 3..80 words
per side (Ding: 4..80, LibreOffice and synopses: 2..80), word and character length ratio <= 3,
untranslated pairs dropped, de-duplicated on normalised (source, target).
Splits: unique normalised sources sorted by sha256; the first {N_VALID} are
validation, the next {N_TEST} test, the rest train, so no source is in two
splits. Files are gzip'ed with mtime=0 (byte-reproducible).
"""
  if os.path.exists(path):  # Keep the section of scripts/build_l10n_data.py.
    with open(path) as f:
      old = f.read()
    if L10N_BEGIN in old and L10N_END in old:
      section = old[old.index(L10N_BEGIN):old.index(L10N_END) + len(L10N_END)]
      text = text.rstrip("\n") + "\n\n" + section + "\n"
  with open(path, "w") as f:
    f.write(text)


if __name__ == "__main__":
  sys.exit(main())
