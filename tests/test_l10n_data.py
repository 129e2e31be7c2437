"""Tests for the Debian l10n training pairs: scripts/build_l10n_data.py's cleaning on
hand-written inputs, and the committed train_l10n.tsv.gz as the specdec_ende_l10n task
reads it (no downloads)."""

import gzip
import os
import shutil
import struct

import pytest

from conftest import load_script
from specdec import data

REL = "wmt_style_ende/train_l10n.tsv.gz"


@pytest.fixture(scope="module")
def b():
  return load_script("build_l10n_data")


def make_mo(entries, *, header="Content-Type: text/plain; charset=UTF-8\n"
            "Plural-Forms: nplurals=2; plural=(n != 1);\n", big_endian=False):
  """A GNU .mo file (as msgfmt writes it, without the hash table) of [(msgid, msgstr)]."""
  entries = sorted([(b"", header.encode())] + [(k.encode(), v.encode()) for k, v in entries])
  order = ">" if big_endian else "<"
  n = len(entries)
  orig_off, trans_off = 28, 28 + 8 * n
  pos = trans_off + 8 * n
  table_o, table_t, blob = b"", b"", b""
  for msgid, _ in entries:
    table_o += struct.pack(order + "2I", len(msgid), pos + len(blob))
    blob += msgid + b"\0"
  for _, msgstr in entries:
    table_t += struct.pack(order + "2I", len(msgstr), pos + len(blob))
    blob += msgstr + b"\0"
  head = struct.pack(order + "7I", 0x950412de, 0, n, orig_off, trans_off, 0, pos)
  return head + table_o + table_t + blob


@pytest.mark.parametrize("big_endian", [False, True])
def test_parse_mo_context_plural_and_credits(b, big_endian):
  mo = make_mo([("menu\x04_Open", "Ö_ffnen"),
                ("%d file\x00%d files", "%d Datei\x00%d Dateien"),
                ("translator-credits", "Erika Mustermann"),
                ("NAME OF TRANSLATORS\x04Your names", "Erika Mustermann"),
                ("Quit", ""), ("Filter|by size", "nach Größe"),
                ("a|b", "a|b")], big_endian=big_endian)
  entries = b.parse_mo(mo, name="x.mo")
  assert len(entries) == 8  # header + 7
  pairs, stats = b.catalog_pairs(entries)
  # msgctxt and a Q_() context gone, plurals singular; "a|b" is no context (German has the |).
  assert pairs == [("%d file", "%d Datei"), ("by size", "nach Größe"), ("a|b", "a|b"),
                   ("_Open", "Ö_ffnen")]
  assert stats == {"credits": 2, "untranslated": 1}


def test_plural_entries_dropped_under_another_rule(b):
  mo = make_mo([("%d file\x00%d files", "%d Datei\x00%d Dateien"), ("File", "Datei")],
               header="Content-Type: text/plain; charset=UTF-8\n"
               "Plural-Forms: nplurals=3; plural=(n==1 ? 0 : n==2 ? 1 : 2);\n")
  pairs, stats = b.catalog_pairs(b.parse_mo(mo))
  assert pairs == [("File", "Datei")] and stats["plural_other_rule"] == 1
  assert b.singular_is_form_zero({"plural-forms": "nplurals=2; plural=n != 1;"})


def test_catalog_charset(b):
  entries = [(b"", b"Content-Type: text/plain; charset=ISO-8859-1\n"),
             (b"Close", "Schließen".encode("latin-1"))]
  assert b.catalog_pairs(entries)[0] == [("Close", "Schließen")]
  assert b.parse_mo(make_mo([])) == [(b"", b"Content-Type: text/plain; charset=UTF-8\n"
                                          b"Plural-Forms: nplurals=2; plural=(n != 1);\n")]


def test_parse_mo_rejects_garbage(b):
  with pytest.raises(ValueError, match="bad.mo"):
    b.parse_mo(b"\0" * 40, name="bad.mo")
  good = make_mo([("Open", "Öffnen")])
  with pytest.raises(ValueError, match="cut.mo"):
    b.parse_mo(good[:40], name="cut.mo")


@pytest.mark.parametrize("text,want", [
    ("_Open", "Open"), ("Ö_ffnen", "Öffnen"), ("Sa~ve As...", "Save As..."),
    ("E&xit", "Exit"), ("&Tom && Jerry", "Tom & Jerry"),
    ("Tom & Jerry", "Tom & Jerry"),          # & before a space is prose
    ("max_line_len", "max_line_len"),        # two underscores: an identifier
    ("__init__", "__init__"),
    ("Value ~a is ~s", "Value ~a is ~s"),    # Lisp format directives
    ("Rock &amp; Roll", "Rock &amp; Roll"),  # an entity is no accelerator
    ("100%", "100%"),
])
def test_strip_accelerators(b, text, want):
  assert b.strip_accelerators(text) == want


@pytest.mark.parametrize("text,want", [
    ("<b>Bold</b> &amp; more", "Bold & more"),
    ("<qt>Delete <filename>%1</filename>?</qt>", "Delete %1?"),
    ("One<br/>Two", "One Two"), ("One<br>Two", "One Two"),
    ("<para>A.</para><para>B.</para>", " A.  B. "),
    ("usage: %s [options] <file>", "usage: %s [options] <file>"),  # a placeholder, no markup
    ("a <b> c", "a <b> c"),
])
def test_strip_markup(b, text, want):
  assert b.strip_markup(text) == want


def test_clean_ui_pair(b):
  assert b.clean_ui_pair("_Open %s", "Ö_ffnen %s") == ([("Open %s", "Öffnen %s")], None)
  assert b.clean_ui_pair("<b></b>", "<b></b>") == ([], "markup_only")
  assert b.clean_ui_pair("<br/>%s", "<br/>%s") == ([], "markup_only")
  assert b.clean_ui_pair("GTK_THEME", "GTK_THEME") == ([], "identical")
  assert b.clean_ui_pair("OK", "OK") == ([], "identical")
  assert b.clean_ui_pair("12:00", "12.00") == ([], "no_letters")
  assert b.clean_ui_pair("Go", "Gehe zu dieser sehr langen Stelle im Dokument") == (
      [], "length_ratio")
  assert b.clean_ui_pair("internal error in the parser", "Interner Fehler: internal error in "
                         "the parser") == ([], "untranslated_inside")
  # Line-aligned help text splits per line; %s placeholders stay as they are.
  got, _ = b.clean_ui_pair("  -a, --all   show all\n  -q   be quiet\n",
                           "  -a, --all   alle zeigen\n  -q   keine Ausgabe\n")
  assert got == [("-a, --all show all", "-a, --all alle zeigen"), ("-q be quiet", "-q keine Ausgabe")]
  got, _ = b.clean_ui_pair("one line\nwrapped here", "eine Zeile")
  assert got == [("one line wrapped here", "eine Zeile")]
  assert b.placeholders("%1$s of %d, {0} in $HOME and %%") == sorted(
      ["%1$s", "%d", "{0}", "$HOME", "%%"])


PAGE = """<page xmlns="http://projectmallard.org/1.0/" id="x">
<info><desc>{desc}</desc><credit><name>Jane</name></credit>
<license><p>Creative Commons</p></license></info>
<title>{title}</title>
<p>{p1}</p>
<code>ls -l</code>
<p>{p2} <link xref="other"/>.</p>
<list><item><p>{item}</p></item></list>
</page>"""


def test_align_mallard_pages(b):
  en = PAGE.format(desc="Open files.", title="Files", p1="Click <gui>Open</gui> to open it.",
                   p2="See", item="Use the keyboard.")
  de = PAGE.format(desc="Dateien öffnen.", title="Dateien",
                   p1="Klicken Sie auf <gui>Öffnen</gui>, um sie zu öffnen.", p2="Siehe",
                   item="Verwenden Sie die Tastatur.")
  assert b.align_pages(en.encode(), de.encode()) == [
      ("Open files.", "Dateien öffnen."), ("Files", "Dateien"),
      ("Click Open to open it.", "Klicken Sie auf Öffnen, um sie zu öffnen."),
      ("Use the keyboard.", "Verwenden Sie die Tastatur.")]  # the empty link's block is left out
  fewer = de.replace("<list><item><p>Verwenden Sie die Tastatur.</p></item></list>", "")
  assert b.align_pages(en.encode(), fewer.encode()) is None
  with pytest.raises(ValueError, match="p.page"):
    b.page_units(b"<page><p>", name="p.page")


def test_split_sentences(b):
  assert b.split_sentences("Open it. Then close it! Done? Yes.") == [
      "Open it.", "Then close it!", "Done?", "Yes."]
  assert b.split_sentences("Wählen Sie z. B. Dateien aus. Dann OK.") == [
      "Wählen Sie z. B. Dateien aus.", "Dann OK."]
  assert b.split_sentences("Use e.g. Files. Then OK.") == ["Use e.g. Files.", "Then OK."]


def test_choose_translations_and_drop_existing(b):
  cands = [("Open", "Öffnen", "p1"), ("Open", "Öffnen", "p2"), ("Open", "Aufmachen", "p3"),
           ("Save", "Speichern", "p1"), ("Close", "Schließen", "p1"), ("Quit", "Beenden", "p2")]
  chosen = b.choose_translations(cands)
  assert chosen["open"] == ("Open", "Öffnen", ["p1", "p2", "p3"])  # majority wins
  tie = b.choose_translations([("Go", "Los", "p"), ("Go", "Gehen", "q")])
  assert tie["go"][1] == "Gehen"  # ties: the smallest normalised German
  kept, stats = b.drop_existing(chosen, train_sources={"save"}, heldout_sources={"close"},
                                heldout_targets={"beenden"})
  assert sorted(kept) == ["open"]
  assert stats == {"source_in_train": 1, "source_in_validation_or_test": 1,
                   "target_in_validation_or_test": 1}


def test_cap_short(b):
  rows = [(f"{i:03d}", "Open" if i % 2 else "Open the file now please", "x") for i in range(100)]
  capped = b.cap_short(rows, 0.25)
  short = [r for r in capped if b.is_short(r[1])]
  assert len(capped) - len(short) == 50 and len(short) == 16  # 16 / 66 <= 0.25
  assert short == [r for r in rows if b.is_short(r[1])][:16]   # the first by hash
  assert b.cap_short(rows, 0.0) == [r for r in rows if not b.is_short(r[1])]
  with pytest.raises(ValueError, match="max_short_fraction"):
    b.cap_short(rows, 1.0)


def test_licenses_of(b):
  dep5 = (b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
          b"Files: *\nLicense: GPL-2+\n\nFiles: po/*\nLicense: LGPL-2.1+\n")
  assert b.licenses_of(dep5) == ["GPL-2+", "LGPL-2.1+"]
  assert b.licenses_of(b"This is under the GNU General Public License.") == ["GPL"]
  assert b.licenses_of(None) == ["(no copyright file)"]


def _zip(files):
  import io  # pylint: disable=g-import-not-at-top
  import zipfile  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as zf:
    for name, text in files.items():
      zf.writestr(name, text)
  return buf.getvalue()


def test_fluent_properties_dtd(b):
  ftl = ("# comment\n-brand-short-name = Firefox\nhello = Hello { $name }!\n"
         "open-button = Open\n    .accesskey = O\n    .title = Open { -brand-short-name }\n"
         "long = First line\n    second line\n"
         "tabs = { $n ->\n    [one] One tab\n   *[other] { $n } tabs\n}\n")
  got = b.parse_ftl(ftl)
  assert got["hello"] == "Hello { $name }!" and got["long"] == "First line second line"
  assert got["open-button.title"] == "Open { -brand-short-name }"
  terms = {"-brand-short-name": "Firefox"}
  assert b.resolve_ftl(got["open-button.title"], terms) == "Open Firefox"
  assert b.resolve_ftl(got["hello"], terms) == "Hello { $name }!"   # variables stay
  assert b.resolve_ftl("{ $n -> [one] x *[other] y }", terms) is None  # selectors dropped
  assert b.resolve_ftl("Use { -unknown-term }", terms) is None
  assert b.resolve_ftl('Press { "F1" }', terms) == "Press F1"
  assert b.parse_properties("# c\na = Line\\nnext\nb=\\u00dcber %S\n") == {
      "a": "Line\nnext", "b": "Über %S"}
  assert b.parse_dtd('<!ENTITY file.label "File">\n<!ENTITY x \'It&apos;s\'>') == {
      "file.label": "File", "x": "It&apos;s"}
  assert b.mozilla_en_path("chrome/de/locale/de/global/x.dtd") == (
      "chrome/en-US/locale/en-US/global/x.dtd")
  assert b.mozilla_en_path("browser/localization/de/a.ftl") == "localization/en-US/a.ftl"
  assert b.mozilla_en_path("manifest.json") is None


def test_mozilla_pairs(b):
  langpack = _zip({
      "localization/de/app.ftl": "-brand-short-name = Firefox\nsave = Speichern\n"
                                 "    .accesskey = S\nabout = Über { -brand-short-name }\n",
      "chrome/de/locale/de/global/tabs.properties": "tabs=#1 Tab;#1 Tabs\nonly.de=Nur\n",
      "chrome/de/locale/de/global/orphan.dtd": '<!ENTITY a "A">',
  })
  omni = _zip({
      "localization/en-US/app.ftl": "-brand-short-name = Firefox\nsave = Save\n"
                                    "    .accesskey = a\nabout = About { -brand-short-name }\n",
      "chrome/en-US/locale/en-US/global/tabs.properties": "tabs=#1 tab;#1 tabs\n",
  })
  pairs, stats = b.mozilla_pairs(langpack, [omni])
  assert sorted(pairs) == [("#1 tab", "#1 Tab"), ("About Firefox", "Über Firefox"),
                           ("Save", "Speichern")]
  assert stats["files"] == 2 and stats["files_without_en"] == 1


# ---------------------------------------------------------------------------
# The committed file.


def test_l10n_file_reads_and_counts():
  rows = data.read_tsv(REL)
  assert len(rows) == data.load_counts()[REL]["lines"] >= 100000
  assert len({data.normalize_source(a) for a, _ in rows}) == len(rows)  # de-duplicated
  for en, de in rows[:2000]:
    assert en and de and en.strip() == en and "\t" not in en + de and "\n" not in en + de
    assert data.normalize_source(en) != data.normalize_source(de)


def test_l10n_task_train_is_ende_train_plus_l10n():
  base = data.num_examples("specdec_ende", "train")
  extra = data.load_counts()[REL]["lines"]
  assert data.num_examples("specdec_ende_l10n", "train") == base + extra
  for split in ("validation", "test"):
    assert data.num_examples("specdec_ende_l10n", split) == data.num_examples("specdec_ende",
                                                                              split)
  pairs = data.read_pairs("specdec_ende_l10n", "train")
  assert len(pairs) == base + extra
  assert pairs[:3] == data.read_pairs("specdec_ende", "train")[:3]
  assert data.TASK_PREFIXES["specdec_ende_l10n"] == data.TASK_PREFIXES["specdec_ende"]


def test_l10n_disjoint_from_every_split():
  l10n = {data.normalize_source(a) for a, _ in data.read_tsv(REL)}
  for split in data.SPLITS:
    rows = data.read_pairs("specdec_ende", split)
    assert not l10n & {data.normalize_source(a) for a, _ in rows}, split
  held_targets = {data.normalize_source(t) for s in ("validation", "test")
                  for _, t in data.read_pairs("specdec_ende", s)}
  assert not {data.normalize_source(t) for _, t in data.read_tsv(REL)} & held_targets


def test_l10n_short_share_is_capped(b):
  rows = data.read_tsv(REL)
  short = sum(b.is_short(en) for en, _ in rows)
  assert short <= b.MAX_SHORT_FRACTION * len(rows) + 1


def test_l10n_bad_file_names_it(tmp_path, monkeypatch):
  tmp_data = tmp_path / "data"
  (tmp_data / "wmt_style_ende").mkdir(parents=True)
  shutil.copy(os.path.join(data.DATA_DIR, data.COUNTS_FILE), tmp_data / data.COUNTS_FILE)
  for split in data.SPLITS:
    name = f"wmt_style_ende/{split}.tsv.gz"
    shutil.copy(os.path.join(data.DATA_DIR, name), tmp_data / name)
  monkeypatch.setattr(data, "DATA_DIR", str(tmp_data))
  with pytest.raises(ValueError, match="train_l10n.tsv.gz"):
    data.read_pairs("specdec_ende_l10n", "train")  # missing
  with gzip.open(tmp_data / REL, "wt", encoding="utf-8") as f:
    f.write("only one line\tnur eine Zeile\n")
  with pytest.raises(ValueError, match="train_l10n.tsv.gz"):
    data.read_pairs("specdec_ende_l10n", "train")  # wrong count
  assert len(data.read_pairs("specdec_ende_l10n", "validation")) == data.num_examples(
      "specdec_ende", "validation")
