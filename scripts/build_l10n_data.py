#!/usr/bin/env python3
"""Builds extra EN->DE training pairs from Debian's own translations (l10n).

Sources, all Debian 12 "bookworm" (main), versions pinned in ``PACKAGES``:

* gettext catalogs: the German ``.mo`` files (``.../de/LC_MESSAGES/*.mo``, or
  ``de_DE`` where a domain has no ``de``) of GNU tools, GNOME, KDE and other
  applications and ``libreoffice-l10n-de``. Each entry is a human translation of
  one English UI string, message or help text.
* GNOME help pages (Mallard ``usr/share/help/{C,de}/<app>/*.page``): the German
  pages are made from the English ones by itstool, so their text blocks
  (``title``, ``desc``, ``p``, ...) correspond one to one; a page whose block
  sequence differs is skipped. These are sentence-level data.
* Firefox ESR and Thunderbird: the German language pack (``*-l10n-de``, a
  ``.xpi``) paired with the en-US files in the application's ``omni.ja`` by
  (file, key): Fluent ``.ftl`` (terms such as ``{ -brand-short-name }``
  resolved, ``{ $var }`` kept, select expressions dropped), ``.properties``
  and ``.dtd`` (access keys, sizes and styles dropped).

Output (next to the existing splits, which are read but never written)::

  wmt_style_ende/train_l10n.tsv.gz    english \\t german (train only)
  COUNTS.json                         its entry added; the others kept as they are
  wmt_style_ende/SOURCES_l10n.md      per package: version, license, counts
  LICENSES.md                         a section between the l10n markers

Cleaning (module-level functions, tested in tests/test_l10n_data.py): the
``msgctxt`` prefix (before ``\\x04``) is dropped; a plural entry contributes its
singular pair only (msgid and ``msgstr[0]``, which is the singular form under
German's ``plural=(n != 1)``; catalogs with another plural rule lose their plural
entries); translator-credit entries are dropped; markup tags are stripped
(entities decoded) and markup-only strings dropped; accelerator markers (``_``,
``&``, ``~``) are removed where a side has exactly one; multi-line strings are
split into lines when both sides have the same number of lines; placeholders
(``%s``, ``%1$d``, ``{0}``, ``$VAR``) are kept verbatim; identical EN==DE,
letter-less and badly length-mismatched pairs are dropped, as are pairs of more
than ``MAX_TOKENS`` tokens (shipped SentencePiece model) on either side, after a
long help paragraph has been split into sentences where both sides have the same
number of sentences.

De-duplication: by normalised English source (as ``build_data.normalize_source``);
among the translations of one source the most frequent (normalised) German wins
(ties: the smallest); sources already in the existing train, validation or test
split are dropped, and so are German targets of validation or test. The valid and
test splits (the benchmark) are checked against COUNTS.json and left untouched.

UI strings are short: pairs whose English side has at most ``SHORT_WORDS`` words
are capped at ``--max_short_fraction`` of the output (the kept ones are the first
by sha256 of the normalised source), so sentence-level text is not drowned.

Rows are sorted by sha256 of the normalised source; gzip with mtime=0: the same
inputs give the same bytes.

Usage (as root: ``apt-get download``; sentencepiece is needed, so the venv)::

  python scripts/build_l10n_data.py --work_dir /tmp/specdec_l10n

``--skip_fetch`` reuses the debs already in ``--work_dir/debs``.
"""

import argparse
import collections
import hashlib
import html
import io
import json
import os
import re
import struct
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, SCRIPTS)

import build_data  # noqa: E402  pylint: disable=g-import-not-at-top

REPO_ROOT = build_data.REPO_ROOT
DEFAULT_OUT = build_data.DEFAULT_OUT
VOCAB_PATH = os.path.join(REPO_ROOT, "specdec", "assets", "vocab", "spm_4k.model")
TASK_DIR = build_data.ENDE_TASK_DIR
OUT_NAME = "train_l10n.tsv.gz"
SOURCES_NAME = "SOURCES_l10n.md"
LICENSE_BEGIN, LICENSE_END = build_data.L10N_BEGIN, build_data.L10N_END

MAX_TOKENS = 64       # per side, shipped SentencePiece model, EOS not counted
SHORT_WORDS = 3       # an English side of <= this many words is a "short" (UI) pair
MAX_SHORT_FRACTION = 0.25

# Debian bookworm packages and the versions the committed file was built from.
PACKAGES = {
    "aisleriot": "1:3.22.23-1",
    "akregator": "4:22.12.3-1",
    "alsa-utils": "1.2.8-1",
    "anjuta-common": "2:3.34.0-8",
    "apt": "2.6.2",
    "aptitude-common": "0.8.13-5",
    "ark": "4:22.12.3-1+deb12u1",
    "atril-common": "1.26.0-2+deb12u4",
    "audacity-data": "3.2.4+dfsg-1",
    "baobab": "43.0-1",
    "bash": "5.2.15-2+b13",
    "binutils-common": "2.40-2",
    "bison": "2:3.8.2+dfsg-1+b1",
    "blueman": "2.3.5-2+b1",
    "brasero-common": "3.12.3-2",
    "caja-common": "1.26.1-1+deb12u1",
    "cheese-common": "43.0-1",
    "cinnamon-l10n": "5.6.1-2",
    "claws-mail-i18n": "4.1.1-2",
    "coreutils": "9.1-1",
    "cpio": "2.13+dfsg-7.1",
    "darktable": "4.2.1-4",
    "dconf-editor": "43.0-1",
    "debconf-i18n": "1.5.82",
    "deluge-common": "2.0.3-4",
    "devhelp-common": "43.0-3",
    "diffutils": "1:3.8-4",
    "digikam-data": "4:7.9.0-1",
    "dolphin": "4:22.12.3-1",
    "dpkg": "1.21.23",
    "e2fsprogs-l10n": "1.47.0-2",
    "engrampa-common": "1.26.0-1+deb12u2",
    "eog": "43.2-1+deb12u1",
    "eom-common": "1.26.0-2",
    "epiphany-browser-data": "43.1-1",
    "evince-common": "43.1-2+deb12u1",
    "evolution-common": "3.46.4-2+deb12u1",
    "evolution-data-server-common": "3.46.4-2+deb12u1",
    "file-roller": "43.0-1",
    "firefox-esr-l10n-de": "153.8.0esr-1~deb12u1",
    "filezilla-common": "3.63.0-1+deb12u3",
    "findutils": "4.9.0-4",
    "five-or-more": "1:3.32.3-1",
    "four-in-a-row": "1:3.38.1-1+b1",
    "freeciv-data": "3.0.6-1+deb12u1",
    "gawk": "1:5.2.1-2",
    "gcc-12-locales": "12.2.0-14+deb12u1",
    "geany-common": "1.38-1",
    "gedit-common": "44.2-1",
    "gettext": "0.21-12",
    "gettext-base": "0.21-12",
    "gftp-common": "2.9.1~beta-1",
    "ghex": "43.1-1",
    "gimp-data": "2.10.34-1+deb12u10",
    "git": "1:2.39.5-0+deb12u3",
    "gitg": "41-2",
    "gnome-boxes": "43.2-1",
    "gnome-builder": "43.6-3",
    "gnome-calculator": "1:43.0.1-2",
    "gnome-calendar": "43.1-2",
    "gnome-chess": "1:43.1-1",
    "gnome-clocks": "43.0-1",
    "gnome-color-manager": "3.36.0-1+b1",
    "gnome-contacts": "43.1-1",
    "gnome-control-center-data": "1:43.6-2~deb12u1",
    "gnome-dictionary": "40.0-3",
    "gnome-disk-utility": "43.0-1",
    "gnome-font-viewer": "43.0-1",
    "gnome-initial-setup": "43.2-6",
    "gnome-logs": "43.0-1",
    "gnome-mahjongg": "1:3.38.3-2",
    "gnome-maps": "43.5-2~deb12u1",
    "gnome-mines": "1:40.1-1",
    "gnome-music": "42.1-1",
    "gnome-nettool": "42.0-1",
    "gnome-nibbles": "1:3.38.2-2+b1",
    "gnome-photos": "43.0-2",
    "gnome-power-manager": "43.0-1",
    "gnome-robots": "1:40.0-2",
    "gnome-settings-daemon-common": "43.0-4",
    "gnome-shell-common": "43.9-0+deb12u2",
    "gnome-software-common": "43.5-1~deb12u2",
    "gnome-sudoku": "1:43.1-1",
    "gnome-system-monitor": "42.0-2",
    "gnome-taquin": "3.38.1-2+b1",
    "gnome-terminal-data": "3.46.8-1",
    "gnome-tetravex": "1:3.38.2-3",
    "gnome-text-editor": "43.2-1",
    "gnome-tweaks": "42~beta-4",
    "gnome-user-docs": "43.0-2",
    "gnote": "43.1-1",
    "gnucash-common": "1:4.13-1",
    "gnumeric-common": "1.12.55-1",
    "gnupg-l10n": "2.2.40-1.1+deb12u2",
    "gparted-common": "1.3.1-1",
    "gramps": "5.1.5-1",
    "grep": "3.8-5",
    "gthumb-data": "3:3.12.2-3",
    "gvfs-common": "1.50.3-1+deb12u1",
    "gwenview": "4:22.12.3-1",
    "hexchat-common": "2.16.1-1",
    "hugin-data": "2022.0.0+dfsg-2",
    "iagno": "1:3.38.1-2",
    "inkscape": "1.2.2-2+deb12u1",
    "k3b-i18n": "22.12.3-1",
    "kaddressbook": "4:22.12.3-1",
    "kbd": "2.5.1-1+b1",
    "kcalc": "4:22.12.3-1",
    "kdeconnect": "22.12.3-1",
    "kdenlive-data": "22.12.3-2+deb12u2",
    "kdepim-runtime": "4:22.12.3-1",
    "kdevelop-l10n": "4:22.12.2-1",
    "kgpg": "4:22.12.3-1",
    "kile": "4:2.9.93-2",
    "kleopatra": "4:22.12.3-1",
    "kmail": "4:22.12.3-1",
    "kmymoney": "5.1.3-1+b6",
    "konsole": "4:22.12.3-1+deb12u1",
    "korganizer": "4:22.12.3-1",
    "krita-l10n": "1:5.1.5+dfsg-2+deb12u1",
    "kstars-data": "5:3.6.2-2",
    "ktorrent-data": "22.12.3-1",
    "kwin-data": "4:5.27.5-3",
    "libc-l10n": "2.36-9+deb12u14",
    "libglib2.0-data": "2.74.6-2+deb12u9",
    "libgnutls30": "3.7.9-2+deb12u7",
    "libgtk-3-common": "3.24.38-2~deb12u3",
    "libgtk-4-common": "4.8.3+ds-2+deb12u1",
    "libgweather-4-common": "4.2.0-2",
    "libkf5configwidgets-data": "5.103.0-1",
    "libkf5coreaddons-data": "5.103.0-1",
    "libkf5i18n-data": "5.103.0-1",
    "libkf5kcmutils-data": "5.103.0-3",
    "libkf5textwidgets-data": "5.103.0-1",
    "libkf5widgetsaddons-data": "5.103.0-1",
    "libkf5xmlgui-data": "5.103.0-1",
    "libparted-i18n": "3.5-3+deb12u1",
    "libreoffice-l10n-de": "4:7.4.7-1+deb12u14",
    "libsane-common": "1.2.1-2",
    "login": "1:4.13+dfsg1-1+deb12u2",
    "lynx-common": "2.9.0dev.12-1",
    "m4": "1.4.19-3",
    "make": "4.3-4.1",
    "marco-common": "1.26.1-3+deb12u2",
    "mate-control-center-common": "1.26.0-2+deb12u1",
    "mate-desktop-common": "1.26.0-2",
    "mate-panel-common": "1.27.0-1",
    "mate-power-manager-common": "1.26.0-2+deb12u1",
    "mate-terminal-common": "1.26.0-2",
    "mate-utils-common": "1.26.0-1+deb12u1",
    "mc-data": "3:4.8.29-2",
    "meld": "3.22.0-2",
    "mousepad": "0.5.10-2",
    "mutt": "2.2.12-0.1~deb12u2",
    "mutter-common": "43.8-0+deb12u1",
    "nano": "7.2-1+deb12u1",
    "nautilus-data": "43.2-1",
    "network-manager": "1.42.4-1+deb12u1",
    "network-manager-gnome": "1.30.0-2",
    "okular": "4:22.12.3-1+deb12u1",
    "orca": "43.1-1",
    "packagekit": "1.2.6-5+deb12u1",
    "pan": "0.154-1",
    "pdfarranger": "1.9.2-1",
    "pidgin-data": "2.14.12-1",
    "pitivi": "2022.06-1+b1",
    "plasma-desktop-data": "4:5.27.5-2",
    "plasma-workspace-data": "4:5.27.5-2+deb12u2",
    "pluma-common": "1.26.0-1+deb12u1",
    "polari": "43.0-1",
    "procps": "2:4.0.2-3",
    "psmisc": "23.6-1",
    "pulseaudio": "16.1+dfsg1-2+b1",
    "quadrapassel": "1:40.2-1",
    "rhythmbox-data": "3.4.6-2",
    "ristretto": "0.12.4-1",
    "seahorse": "43.0-1",
    "sed": "4.9-1+deb12u1",
    "shotwell-common": "0.30.17-1",
    "simple-scan": "42.5-2",
    "sound-juicer": "3.38.0-2.1",
    "subversion": "1.14.2-4+deb12u1",
    "sudo": "1.9.13p3-1+deb12u4",
    "swell-foop": "1:41.1-1",
    "synaptic": "0.91.3",
    "system-config-printer-common": "1.5.18-1",
    "systemd": "252.39-1~deb12u2",
    "systemsettings": "4:5.27.5-2",
    "tar": "1.34+dfsg-1.2+deb12u1",
    "texinfo": "6.8-6+b1",
    "thunderbird-l10n-de": "1:153.8.0esr-1~deb12u1",
    "thunar-data": "4.18.4-1",
    "totem-common": "43.0-2",
    "udisks2": "2.9.4-4+deb12u2",
    "util-linux-locales": "2.38.1-5+deb12u3",
    "vim-runtime": "2:9.0.1378-2+deb12u2",
    "vlc-l10n": "3.0.24-0+deb12u1",
    "wesnoth-1.16-data": "1:1.16.9-1",
    "wget": "1.21.3-1+deb12u1",
    "xfce4-panel": "4.18.2-1",
    "xfce4-session": "4.18.1-1",
    "xfce4-settings": "4.18.2-1",
    "xfce4-terminal": "1.0.4-1",
    "xkb-data": "2.35.1-1",
    "xournalpp": "1.1.3-1",
    "yelp": "42.2-1+deb12u2",
    "zenity-common": "3.44.0-1",
}

# Mozilla language packs (Fluent .ftl, .properties, .dtd in a langpack .xpi) and the
# package whose omni.ja holds the en-US originals; the pairs count for the langpack.
MOZILLA = {"firefox-esr-l10n-de": "firefox-esr", "thunderbird-l10n-de": "thunderbird"}
ENGLISH_PACKAGES = {
    "firefox-esr": "153.8.0esr-1~deb12u1",
    "thunderbird": "1:153.8.0esr-1~deb12u1",
}

# Packages read only for their copyright file: a package above whose
# usr/share/doc/<pkg> is a symlink to theirs.
COPYRIGHT_PACKAGES = {
    "debconf": "1.5.82",          # debconf-i18n
    "gcc-12-base": "12.2.0-14+deb12u1",  # gcc-12-locales
}

# Range of the output's line count (the build fails outside it).
EXPECTED_LINES = (100000, 400000)


# --------------------------------------------------------------------------
# .mo catalogs.

MO_MAGIC = 0x950412de


def parse_mo(data, name="<mo>"):
  """Returns the [(msgid, msgstr)] byte strings of a GNU .mo file.

  Raises:
    ValueError: (naming `name`) for a bad magic number or a truncated table.
  """
  if len(data) < 28:
    raise ValueError(f"{name}: too short for a .mo file")
  for order in ("<", ">"):
    if struct.unpack(order + "I", data[:4])[0] == MO_MAGIC:
      break
  else:
    raise ValueError(f"{name}: not a .mo file (bad magic)")
  _, n, orig_off, trans_off = struct.unpack(order + "4I", data[4:20])
  entries = []
  for i in range(n):
    try:
      olen, ooff = struct.unpack_from(order + "2I", data, orig_off + 8 * i)
      tlen, toff = struct.unpack_from(order + "2I", data, trans_off + 8 * i)
    except struct.error as e:
      raise ValueError(f"{name}: truncated string table") from e
    if ooff + olen > len(data) or toff + tlen > len(data):
      raise ValueError(f"{name}: string {i} points past the end of the file")
    entries.append((data[ooff:ooff + olen], data[toff:toff + tlen]))
  return entries


def mo_header(entries):
  """The header entry (msgid "") as {field: value}, lower-cased field names."""
  for msgid, msgstr in entries:
    if msgid == b"":
      text = msgstr.decode("utf-8", "replace")
      out = {}
      for line in text.split("\n"):
        if ":" in line:
          k, v = line.split(":", 1)
          out[k.strip().lower()] = v.strip()
      return out
  return {}


def mo_charset(header):
  m = re.search(r"charset=([\w.-]+)", header.get("content-type", ""))
  charset = m.group(1) if m else "utf-8"
  return "utf-8" if charset.upper() in ("CHARSET", "") else charset


_GERMAN_PLURAL = re.compile(r"^nplurals=2;plural=\(?n!=1\)?;?$")


def singular_is_form_zero(header):
  """True if the catalog's Plural-Forms make msgstr[0] the singular (German's rule)."""
  rule = re.sub(r"\s+", "", header.get("plural-forms", ""))
  return bool(_GERMAN_PLURAL.match(rule))


# msgctxt values / msgids that carry translator names, not translations.
_CREDIT_CTX = {"NAME OF TRANSLATORS", "EMAIL OF TRANSLATORS"}
_CREDIT_IDS = {"translator-credits", "translator_credits", "Your names",
               "Your emails", "translator-credits\n", "TRANSLATORS"}


_PIPE_CONTEXT = re.compile(r"^[^\s|]+\|\S")


def catalog_pairs(entries):
  """(English, German) strings of one catalog, msgctxt stripped, plurals singular.

  A ``context|`` prefix (glib's ``Q_()``) is dropped from an English string whose
  German has no ``|``.

  Returns (pairs, stats) where stats counts what was dropped and why.
  """
  header = mo_header(entries)
  charset = mo_charset(header)
  singular_ok = singular_is_form_zero(header)
  pairs, stats = [], collections.Counter()
  for msgid, msgstr in entries:
    if msgid == b"":
      continue
    try:
      en_raw = msgid.decode(charset)
      de_raw = msgstr.decode(charset)
    except (UnicodeDecodeError, LookupError):
      stats["bad_encoding"] += 1
      continue
    ctx = None
    if "\x04" in en_raw:
      ctx, en_raw = en_raw.split("\x04", 1)
    en_forms = en_raw.split("\x00")
    de_forms = de_raw.split("\x00")
    if len(en_forms) > 1 and not singular_ok:
      stats["plural_other_rule"] += 1
      continue
    en, de = en_forms[0], de_forms[0]
    if _PIPE_CONTEXT.match(en) and "|" not in de:  # glib's Q_("context|text")
      en = en.split("|", 1)[1]
    if ctx in _CREDIT_CTX or en.strip() in _CREDIT_IDS:
      stats["credits"] += 1
      continue
    if not de.strip():
      stats["untranslated"] += 1
      continue
    pairs.append((en, de))
  return pairs, stats


# --------------------------------------------------------------------------
# String cleaning.

# HTML, Pango, Qt rich text and KDE (KUIT) tags.
_TAGS = ("a abbr acronym application b bcode big blockquote body br center cite code command "
         "dd del div dl dt em email emphasis envar filename font h1 h2 h3 h4 h5 h6 head hr html "
         "i icode img interface ins item kbd li link list message meta nl nobr note numid ol p "
         "para placeholder pre q qt resource s samp shortcut small span strike strong style sub "
         "sup table tbody td tfoot th thead title tr tt u ul var warning").split()
_TAG_RE = re.compile(r"</?(?:%s)(?:\s[^<>]*)?/?>" % "|".join(_TAGS), re.IGNORECASE)
# What makes a string markup: a closing or self-closing known tag, <br>, or an entity. A
# lone <file> or <item> is a command-line placeholder and stays (it is translated).
_MARKUP_RE = re.compile(r"</(?:%s)\s*>|<(?:%s)(?:\s[^<>]*)?/>|<br\s*>" % (("|".join(_TAGS),) * 2),
                        re.IGNORECASE)
_ENTITY_RE = re.compile(r"&(?:[a-zA-Z]{2,8}|#[0-9]{1,6}|#x[0-9a-fA-F]{1,6});")


def strip_markup(text):
  """Removes HTML/Pango/KUIT tags and decodes entities (only when the text has markup).

  A tag becomes a space where it separates blocks (br, p, li, ...) so words do
  not merge; inline tags (b, i, filename, ...) vanish. Text without a closing or
  self-closing tag, ``<br>`` or an entity is returned as it is (``<file>`` in a
  usage line is a placeholder, not markup).
  """
  if not (_MARKUP_RE.search(text) or _ENTITY_RE.search(text)):
    return text
  text = re.sub(r"<(?:br|p|/p|li|/li|para|/para|nl|div|/div|tr|/tr|td|/td|h\d|/h\d|hr)"
                r"(?:\s[^<>]*)?/?>", " ", text, flags=re.IGNORECASE)
  text = _TAG_RE.sub("", text)
  return html.unescape(text)


def has_markup(text):
  return bool(_MARKUP_RE.search(text))


# A marker followed by a letter or digit; the doubled marker is a literal.
_ACCEL = {
    "_": re.compile(r"(?<!_)_(?=[^\W_])"),
    "&": re.compile(r"&(?=[^\W_])(?![a-zA-Z]{2,8};|#[0-9]{1,6};|#x[0-9a-fA-F]{1,6};)"),
    # Two word characters: Lisp/Scheme format directives (~a, ~s) are not accelerators.
    "~": re.compile(r"~(?=[^\W_]\w)"),
}


def strip_accelerators(text):
  """Removes a keyboard accelerator marker: `_` (GTK), `&` (Qt/KDE), `~` (LibreOffice).

  A marker is removed only where it occurs exactly once before a letter or digit
  in the string (``_Open``, ``Ö&ffnen``, ``~Save``), so identifiers such as
  ``max_line_len`` and prose such as ``Tom & Jerry`` are kept; a doubled marker
  (``__``, ``&&``) is then the literal character. A string can have one marker of
  each kind removed.
  """
  for marker, pattern in _ACCEL.items():
    if len(pattern.findall(text)) == 1 and marker * 2 not in text:
      text = pattern.sub("", text, count=1)
    elif marker == "&" and "&&" in text and len(pattern.findall(text.replace("&&", ""))) == 1:
      text = pattern.sub("", text.replace("&&", "\x00"), count=1).replace("\x00", "&")
  return text


def split_lines(en, de):
  """[(en, de)] per line when both sides have the same number of non-empty lines, else
  the whole strings (their lines joined by the later whitespace normalisation)."""
  en_lines = [l for l in en.split("\n") if l.strip()]
  de_lines = [l for l in de.split("\n") if l.strip()]
  if len(en_lines) > 1 and len(en_lines) == len(de_lines):
    return list(zip(en_lines, de_lines))
  return [(en, de)]


_PLACEHOLDER = re.compile(r"%(?:\d+\$)?[-+ #0]*\d*(?:\.\d+)?(?:hh|h|ll|l|L|z|j|t)?[diouxXeEfgGcsp%]"
                          r"|%\d+|\{\w*\}|\$\{?\w+\}?")


def placeholders(text):
  """The multiset of printf/Qt/brace/shell placeholders (kept verbatim by the cleaning)."""
  return sorted(_PLACEHOLDER.findall(text))


def clean_ui_pair(en, de):
  """One catalog pair -> [(en, de)] cleaned pairs, or ([], reason) when dropped.

  Returns (pairs, reason): reason is None when pairs is non-empty.
  """
  out, reason = [], None
  for e, d in split_lines(en, de):
    markup = has_markup(e) or has_markup(d)
    e, d = strip_markup(e), strip_markup(d)
    e, d = build_data.clean(strip_accelerators(e)), build_data.clean(strip_accelerators(d))
    r = pair_problem(e, d)
    if r is None:
      out.append((e, d))
    else:
      reason = "markup_only" if markup and r in ("empty", "no_letters") else r
  return out, (None if out else reason)


def pair_problem(en, de):
  """Why a cleaned pair is unusable (a short string), or None."""
  if not en or not de:
    return "empty"
  if "\t" in en or "\t" in de:
    return "tab"
  if not re.search(r"[A-Za-z]{2}", en) or not re.search(r"[^\W\d_]{2}", de):
    return "no_letters"
  if build_data.normalize_source(en) == build_data.normalize_source(de):
    return "identical"
  if len(en) >= 15 and build_data.n_words(en) >= 3 and en in de:
    return "untranslated_inside"  # e.g. gcc's "Interner Fehler: <the English message>"
  longer, shorter = max(len(en), len(de)), max(1, min(len(en), len(de)))
  if longer > 20 and longer / shorter > 3.0:
    return "length_ratio"
  return None


# --------------------------------------------------------------------------
# Mallard help pages.

_MAL = "{http://projectmallard.org/1.0/}"
_UNIT_TAGS = {"title", "subtitle", "desc", "p"}
_SKIP_TAGS = {"code", "screen", "credit", "revision", "license", "media", "comment"}


def page_units(xml_bytes, name="<page>"):
  """[(tag, text)] text blocks of a Mallard page in document order.

  A block is a title/subtitle/desc/p not inside another block; code, screens,
  credits, licenses and comments are skipped, as is ``info`` except its ``desc``.

  Raises:
    ValueError: naming `name` if the XML does not parse.
  """
  try:
    root = ET.fromstring(xml_bytes)
  except ET.ParseError as e:
    raise ValueError(f"{name}: {e}") from e
  units = []

  def walk(elem, in_info):
    tag = elem.tag.replace(_MAL, "") if isinstance(elem.tag, str) else ""
    if tag in _SKIP_TAGS:
      return
    if tag in _UNIT_TAGS and (not in_info or tag == "desc"):
      # An empty <link xref=.../> shows the linked page's title: the text has a hole.
      hole = any(e.tag == _MAL + "link" and not "".join(e.itertext()).strip()
                 for e in elem.iter())
      units.append((tag, None if hole else "".join(elem.itertext())))
      return
    for child in elem:
      walk(child, in_info or tag == "info")

  walk(root, False)
  return units


def align_pages(en_xml, de_xml, name="<page>"):
  """[(en, de)] block pairs of two Mallard pages, or None if their block sequences differ.

  Blocks with an empty link (text None) on either side are left out.
  """
  en_u, de_u = page_units(en_xml, name), page_units(de_xml, name)
  if [t for t, _ in en_u] != [t for t, _ in de_u]:
    return None
  return [(build_data.clean(e), build_data.clean(d)) for (_, e), (_, d) in zip(en_u, de_u)
          if e is not None and d is not None]


_NO_SPLIT_BEFORE = {"z", "B", "d", "h", "u", "a", "o", "bzw", "ca", "Nr", "usw", "evtl", "ggf",
                    "vgl", "inkl", "etc", "Dr", "e.g", "i.e", "eg", "ie", "vs", "S", "Abb"}


def split_sentences(text):
  """Sentences of a paragraph: split after . ! ? before an upper-case letter or a digit,
  not after a one-letter word or a common abbreviation (z. B., e.g., bzw., ...)."""
  out, start = [], 0
  for m in re.finditer(r"[.!?]['\"’”»)]*\s+(?=[A-ZÄÖÜ0-9„\"(])", text):
    before = text[start:m.start()].split()
    word = before[-1].rstrip(".") if before else ""
    if word in _NO_SPLIT_BEFORE or len(word.strip("(\"'")) <= 1:
      continue
    out.append(text[start:m.end()].strip())
    start = m.end()
  out.append(text[start:].strip())
  return [s for s in out if s]


# --------------------------------------------------------------------------
# Mozilla localization files.

# Keys that are not text: access keys, shortcuts, sizes and styles.
_MOZ_NOT_TEXT = re.compile(r"(accesskey|commandkey|\.key|Key|\.keycode|\.modifiers|\.style|"
                           r"\.width|\.height|\.size|\.length)$", re.IGNORECASE)


def parse_ftl(text):
  """{"id" or "id.attr": value} of a Fluent file; a multi-line value's lines joined by spaces.

  Terms (``-brand-name``) are included with their dash.
  """
  out, cur, base = {}, None, None
  for line in text.split("\n"):
    if not line.strip():
      continue
    if line.startswith("#"):
      cur = base = None
      continue
    m = re.match(r"^(-?[A-Za-z][\w-]*)\s*=\s*(.*)$", line)
    if m:
      cur = base = m.group(1)
      out[cur] = m.group(2)
      continue
    m = re.match(r"^\s+\.([A-Za-z][\w-]*)\s*=\s*(.*)$", line)
    if m and base:
      cur = f"{base}.{m.group(1)}"
      out[cur] = m.group(2)
      continue
    if line[:1] in (" ", "\t") and cur:
      out[cur] = (out[cur] + " " + line.strip()).strip()
      continue
    cur = base = None
  return {k: v.strip() for k, v in out.items()}


def resolve_ftl(value, terms):
  """A Fluent value as plain text: ``{ -term }`` and ``{ "literal" }`` resolved, ``{ $var }``
  kept verbatim; None for select expressions, functions or unknown terms."""
  if "->" in value or re.search(r"\{\s*[A-Z]+\(", value):
    return None
  for _ in range(3):  # terms may refer to terms
    def term(m):
      return terms.get(m.group(1), "\x00")
    value = re.sub(r"\{\s*(-[\w-]+)\s*\}", term, value)
  value = re.sub(r'\{\s*"([^"]*)"\s*\}', lambda m: m.group(1), value)
  if "\x00" in value or re.search(r"\{\s*[^$\s]", value):
    return None
  return value


def parse_properties(text):
  """{key: value} of a Java .properties file (``\\uXXXX`` and ``\\n`` escapes decoded)."""
  out = {}
  for line in text.split("\n"):
    line = line.strip()
    if not line or line[0] in "#!" or "=" not in line:
      continue
    k, v = line.split("=", 1)
    v = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), v.strip())
    out[k.strip()] = v.replace("\\n", "\n").replace("\\t", " ").replace("\\", "")
  return out


def parse_dtd(text):
  """{name: value} of a Mozilla .dtd's ``<!ENTITY name "value">`` declarations."""
  return {m.group(1): m.group(3) for m in
          re.finditer(r"<!ENTITY\s+([\w.-]+)\s+([\"'])(.*?)\2\s*>", text, re.DOTALL)}


def mozilla_en_path(de_path):
  """The en-US path (in omni.ja) of a langpack file, or None for a non-localization file."""
  if de_path.startswith("browser/"):  # Firefox's browser/ files are in browser/omni.ja
    de_path = de_path[len("browser/"):]
  for de, en in (("chrome/de/locale/de/", "chrome/en-US/locale/en-US/"),
                 ("chrome/de/locale/", "chrome/en-US/locale/"),
                 ("localization/de/", "localization/en-US/")):
    if de_path.startswith(de):
      return en + de_path[len(de):]
  return None


def _moz_files(zip_bytes_list):
  """{path: text} of the .ftl/.properties/.dtd files in some zip archives."""
  import zipfile  # pylint: disable=g-import-not-at-top
  out = {}
  for blob in zip_bytes_list:
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
      for name in sorted(zf.namelist()):
        if name.endswith((".ftl", ".properties", ".dtd")):
          out[name] = zf.read(name).decode("utf-8", "replace")
  return out


def _moz_strings(path, text):
  if path.endswith(".ftl"):
    return parse_ftl(text)
  if path.endswith(".properties"):
    return parse_properties(text)
  return parse_dtd(text)


def mozilla_pairs(langpack, omni_jars):
  """(en, de) strings of a langpack .xpi and the omni.ja archives with the en-US files,
  paired by (file, key); Fluent terms resolved per language, plural lists (``a;b``) and
  non-text keys (access keys, sizes, styles) dropped. Returns (pairs, stats)."""
  de_files, en_files = _moz_files([langpack]), _moz_files(omni_jars)
  stats = collections.Counter()
  terms = {}
  for lang, files in (("de", de_files), ("en", en_files)):
    terms[lang] = {}
    for path, text in files.items():
      if path.endswith(".ftl"):
        terms[lang].update({k: v for k, v in parse_ftl(text).items()
                            if k.startswith("-") and "." not in k and "{" not in v})
  pairs = []
  for de_path in sorted(de_files):
    en_path = mozilla_en_path(de_path)
    if en_path is None or en_path not in en_files:
      stats["files_without_en"] += 1
      continue
    de_s = _moz_strings(de_path, de_files[de_path])
    en_s = _moz_strings(en_path, en_files[en_path])
    stats["files"] += 1
    for key in sorted(set(de_s) & set(en_s)):
      if key.startswith("-") or _MOZ_NOT_TEXT.search(key):
        continue
      en, de = en_s[key], de_s[key]
      if de_path.endswith(".ftl"):
        en, de = resolve_ftl(en, terms["en"]), resolve_ftl(de, terms["de"])
        if en is None or de is None:
          stats["ftl_unresolved"] += 1
          continue
      elif ";" in en and "#1" in en:  # PluralForm list: the first (singular) form
        en, de = en.split(";")[0], de.split(";")[0]
      pairs.append((en, de))
  return pairs, stats


# --------------------------------------------------------------------------
# Reading the debs.

_MO_PATH = re.compile(r"/(de|de_DE)/LC_MESSAGES/([^/]+)\.mo$")
_HELP_PATH = re.compile(r"usr/share/help/(C|de)/(.+\.page)$")
_COPYRIGHT_PATH = re.compile(r"usr/share/doc/([^/]+)/copyright$")
_DOC_DIR = re.compile(r"^usr/share/doc/([^/]+)$")
_JAR_PATH = re.compile(r"(/extensions/langpack-de@[^/]+\.xpi|/omni\.ja)$")


def read_deb(path):
  """{"mo": {relpath: bytes}, "help": {(lang, relpath): bytes}, "copyright": bytes|None,
  "doc_link": the package whose doc directory usr/share/doc/<pkg> links to, or None,
  "jars": {path: bytes} of Mozilla langpacks and omni.ja archives}.

  Streams the deb's data tarball (``dpkg-deb --fsys-tarfile``); only German
  catalogs (``de``, or ``de_DE`` for a domain without ``de``), C/de help pages
  and the package's copyright file are kept.
  """
  proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", path], stdout=subprocess.PIPE)
  out = {"mo": {}, "help": {}, "copyright": None, "doc_link": None, "jars": {}}
  package = os.path.basename(path).split("_")[0]
  with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
    for member in tar:
      name = member.name.lstrip("./")
      m_dir = _DOC_DIR.match(name)
      if member.issym() and m_dir and m_dir.group(1) == package:
        out["doc_link"] = member.linkname.rstrip("/")
      if not member.isfile():
        continue
      m_mo, m_help = _MO_PATH.search(name), _HELP_PATH.search(name)
      m_copy = _COPYRIGHT_PATH.search(name)
      if _JAR_PATH.search(name):
        out["jars"][name] = tar.extractfile(member).read()
      elif m_mo:
        out["mo"][name] = tar.extractfile(member).read()
      elif m_help:
        out["help"][(m_help.group(1), m_help.group(2))] = tar.extractfile(member).read()
      elif m_copy and m_copy.group(1) == package:
        out["copyright"] = tar.extractfile(member).read()
  if proc.wait() != 0:
    raise ValueError(f"{path}: dpkg-deb --fsys-tarfile failed")
  # A domain in de_DE only where de lacks it.
  domains_de = {os.path.basename(n) for n in out["mo"] if "/de/LC_MESSAGES/" in n}
  out["mo"] = {n: b for n, b in out["mo"].items()
               if "/de/LC_MESSAGES/" in n or os.path.basename(n) not in domains_de}
  return out


def licenses_of(copyright_bytes):
  """Short license names of a copyright file (DEP-5 `License:` fields, else a text scan)."""
  if not copyright_bytes:
    return ["(no copyright file)"]
  text = copyright_bytes.decode("utf-8", "replace")
  names = []
  if "Format:" in text.split("\n", 1)[0] or "format/1.0" in text[:300]:
    for m in re.finditer(r"^License:[ \t]*(\S[^\n]*)$", text, re.MULTILINE):
      names.append(m.group(1).strip())
  else:
    for pat, lic in ((r"GNU General Public License|GNU GPL|\bGPL\b", "GPL"),
                     (r"GNU Lesser General Public License|GNU Library General Public|\bLGPL\b",
                      "LGPL"),
                     (r"Mozilla Public License", "MPL"), (r"Creative Commons", "CC"),
                     (r"BSD", "BSD"), (r"MIT|Expat", "MIT/Expat"),
                     (r"Artistic", "Artistic"), (r"Apache", "Apache")):
      if re.search(pat, text):
        names.append(lic)
  return sorted(set(names)) or ["(see copyright file)"]


# --------------------------------------------------------------------------
# De-duplication and selection.


def choose_translations(candidates):
  """Groups (en, de, package) by normalised English; returns {key: (en, de, packages)}.

  The German chosen for a source is its most frequent normalised form (ties: the
  smallest), shown as the smallest (en, de) surface pair with that form.
  """
  groups = collections.defaultdict(list)
  for en, de, pkg in candidates:
    key = build_data.normalize_source(en)
    if key:
      groups[key].append((en, de, pkg))
  chosen = {}
  for key, rows in groups.items():
    votes = collections.Counter(build_data.normalize_source(d) for _, d, _ in rows)
    best = min(votes, key=lambda k: (-votes[k], k))
    en, de = min((e, d) for e, d, _ in rows if build_data.normalize_source(d) == best)
    chosen[key] = (en, de, sorted({p for _, _, p in rows}))
  return chosen


def drop_existing(chosen, *, train_sources, heldout_sources, heldout_targets):
  """Removes sources already in the existing splits and targets of the held-out splits.

  Returns (kept, stats): kept is a new dict, stats counts the reasons.
  """
  kept, stats = {}, collections.Counter()
  for key, (en, de, pkgs) in chosen.items():
    if key in heldout_sources:
      stats["source_in_validation_or_test"] += 1
    elif build_data.normalize_source(de) in heldout_targets:
      stats["target_in_validation_or_test"] += 1
    elif key in train_sources:
      stats["source_in_train"] += 1
    else:
      kept[key] = (en, de, pkgs)
  return kept, stats


def is_short(en):
  return build_data.n_words(en) <= SHORT_WORDS


def cap_short(rows, max_fraction):
  """Keeps every long row and at most `max_fraction` of the result short.

  `rows` are (hash, en, de) sorted by hash; the kept short rows are the first by
  hash, so the choice is deterministic and unrelated to the source package.
  """
  if not 0.0 <= max_fraction < 1.0:
    raise ValueError(f"max_short_fraction must be in [0, 1), got {max_fraction}")
  long_rows = [r for r in rows if not is_short(r[1])]
  short_rows = [r for r in rows if is_short(r[1])]
  n_short = min(len(short_rows), int(max_fraction * len(long_rows) / (1.0 - max_fraction)))
  keep = {id(r) for r in short_rows[:n_short]}
  return [r for r in rows if not is_short(r[1]) or id(r) in keep]


# --------------------------------------------------------------------------
# Existing splits and statistics.


def read_tsv_gz(path):
  import gzip  # pylint: disable=g-import-not-at-top
  with open(path, "rb") as f:
    raw = f.read()
  rows = []
  for line in gzip.decompress(raw).decode("utf-8").split("\n"):
    if line:
      a, b = line.split("\t")
      rows.append((a, b))
  return rows, hashlib.sha256(raw).hexdigest()


def existing_splits(out_dir):
  """{split: rows} of the committed wmt_style_ende splits, sha256-checked against COUNTS.json."""
  with open(os.path.join(out_dir, "COUNTS.json")) as f:
    counts = json.load(f)
  out = {}
  for split in build_data.SPLITS:
    rel = f"{TASK_DIR}/{split}.tsv.gz"
    rows, sha = read_tsv_gz(os.path.join(out_dir, rel))
    if rel not in counts or counts[rel]["sha256"] != sha or counts[rel]["lines"] != len(rows):
      raise SystemExit(f"{rel} does not match COUNTS.json; the existing splits must not change")
    out[split] = rows
  return out


def length_stats(lengths):
  """{min, p50, p90, p99, max, mean} of a list of ints."""
  if not lengths:
    return {}
  s = sorted(lengths)
  pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]
  return {"min": s[0], "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": s[-1],
          "mean": round(sum(s) / len(s), 2)}


def histogram(words):
  bins = [(1, 1), (2, 2), (3, 3), (4, 5), (6, 10), (11, 20), (21, 40), (41, 10 ** 9)]
  return {(f"{a}" if a == b else f"{a}-{b}" if b < 10 ** 9 else f">={a}"):
          sum(a <= w <= b for w in words) for a, b in bins}


class Tokens:
  """Token counts (EOS not counted) with the shipped SentencePiece model."""

  def __init__(self, path=VOCAB_PATH):
    import sentencepiece  # pylint: disable=g-import-not-at-top
    if not os.path.exists(path):
      raise SystemExit(f"missing vocabulary {path}")
    self.sp = sentencepiece.SentencePieceProcessor(model_file=path)

  def count(self, texts):
    return [len(ids) for ids in self.sp.encode(list(texts))]


# --------------------------------------------------------------------------
# Main.


def fetch(work_dir, allow_other_versions):
  debs = os.path.join(work_dir, "debs")
  os.makedirs(debs, exist_ok=True)
  pinned = sorted({**PACKAGES, **ENGLISH_PACKAGES, **COPYRIGHT_PACKAGES}.items())
  specs = [p if allow_other_versions else f"{p}={v}" for p, v in pinned]
  build_data.run(["apt-get", "download"] + specs, cwd=debs)


def pinned_deb(debs, pkg, expected, allow_other_versions):
  """(path, version) of the one deb of `pkg` in `debs`; SystemExit on a version other
  than `expected` unless allowed."""
  deb = build_data.find_one(debs, "^" + re.escape(pkg) + "_.*\\.deb$")
  version = subprocess.run(["dpkg-deb", "-f", deb, "Version"], check=True,
                           capture_output=True, text=True).stdout.strip()
  if version != expected and not allow_other_versions:
    raise SystemExit(f"{pkg}: got version {version}, expected {expected} "
                     "(use --allow_other_versions)")
  return deb, version


def package_pairs(content, *, debs, pkg, allow_other_versions, stats):
  """Raw (kind, en, de) of one package's read_deb `content`: its catalogs ("mo"), its
  Mozilla langpack against the en-US package ("mo": cleaned alike) and its aligned help
  pages ("help"). Counts go to `stats`; returns (pairs, english "pkg version" or None)."""
  raw, english = [], None
  for name in sorted(content["mo"]):
    entries = parse_mo(content["mo"][name], name=name)
    pairs, s = catalog_pairs(entries)
    stats.update(s)
    stats["mo_entries"] += len(entries) - 1
    raw.extend(("mo", e, d) for e, d in pairs)
  if pkg in MOZILLA:
    en_pkg = MOZILLA[pkg]
    en_deb, en_version = pinned_deb(debs, en_pkg, ENGLISH_PACKAGES[en_pkg], allow_other_versions)
    english = f"{en_pkg} {en_version}"
    omni = read_deb(en_deb)["jars"]
    langpacks = [b for n, b in sorted(content["jars"].items()) if n.endswith(".xpi")]
    if len(langpacks) != 1:
      raise SystemExit(f"{pkg}: expected one German langpack, found {len(langpacks)}")
    pairs, s = mozilla_pairs(langpacks[0], [b for _, b in sorted(omni.items())])
    stats.update({f"mozilla_{k}": v for k, v in s.items()})
    raw.extend(("mo", e, d) for e, d in pairs)
  help_en = {rel: b for (lang, rel), b in content["help"].items() if lang == "C"}
  help_de = {rel: b for (lang, rel), b in content["help"].items() if lang == "de"}
  for rel in sorted(set(help_en) & set(help_de)):
    try:
      aligned = align_pages(help_en[rel], help_de[rel], name=f"{pkg}:{rel}")
    except ValueError:
      stats["help_pages_bad_xml"] += 1
      continue
    if aligned is None:
      stats["help_pages_unaligned"] += 1
      continue
    stats["help_pages"] += 1
    stats["help_blocks"] += len(aligned)
    raw.extend(("help", e, d) for e, d in aligned)
  return raw, english


def clean_pairs(raw, stats):
  """Cleans raw (kind, en, de): clean_ui_pair for catalog strings, pair_problem for help
  blocks; drop reasons counted in `stats` as drop_<reason>."""
  cleaned = []
  for kind, en, de in raw:
    if kind == "mo":
      pairs, reason = clean_ui_pair(en, de)
    else:
      reason = pair_problem(en, de)
      pairs = [] if reason else [(en, de)]
    if reason:
      stats["drop_" + reason] += 1
    cleaned.extend((kind, e, d) for e, d in pairs)
  return cleaned


def fit_length(cleaned, tokens, stats):
  """Keeps (kind, en, de) of at most MAX_TOKENS per side; a longer paragraph is split into
  sentences when both sides have as many, and its fitting sentence pairs kept."""
  fitted = []
  lens = tokens.count([t for _, e, d in cleaned for t in (e, d)])
  for i, (kind, en, de) in enumerate(cleaned):
    if max(lens[2 * i], lens[2 * i + 1]) <= MAX_TOKENS:
      fitted.append((kind, en, de))
      continue
    es, ds = split_sentences(en), split_sentences(de)
    if len(es) > 1 and len(es) == len(ds):
      sl = tokens.count(es + ds)
      parts = [(e, d) for j, (e, d) in enumerate(zip(es, ds))
               if max(sl[j], sl[len(es) + j]) <= MAX_TOKENS and pair_problem(e, d) is None]
      stats["long_split_sentences"] += len(parts)
      fitted.extend((kind, e, d) for e, d in parts)
      if parts:
        continue
    stats["drop_too_long"] += 1
  return fitted


def collect(work_dir, allow_other_versions, tokens):
  """Reads every pinned deb; returns (candidates [(en, de, package)], per-package info)."""
  debs = os.path.join(work_dir, "debs")
  candidates, info = [], {}
  for pkg in sorted(PACKAGES):
    deb, version = pinned_deb(debs, pkg, PACKAGES[pkg], allow_other_versions)
    content = read_deb(deb)
    if content["copyright"] is None and content["doc_link"] in COPYRIGHT_PACKAGES:
      link = content["doc_link"]
      other, _ = pinned_deb(debs, link, COPYRIGHT_PACKAGES[link], allow_other_versions)
      content["copyright"] = read_deb(other)["copyright"]
    stats = collections.Counter()
    raw, english = package_pairs(content, debs=debs, pkg=pkg,
                                 allow_other_versions=allow_other_versions, stats=stats)
    stats["raw_pairs"] = len(raw)
    fitted = fit_length(clean_pairs(raw, stats), tokens, stats)
    stats["clean_pairs"] = len(fitted)
    stats["clean_help_pairs"] = sum(k == "help" for k, _, _ in fitted)
    candidates.extend((e, d, pkg) for _, e, d in fitted)
    info[pkg] = {"version": version, "english": english,
                 "deb_sha256": build_data.sha256_file(deb),
                 "licenses": licenses_of(content["copyright"]),
                 "catalogs": len(content["mo"]), "stats": dict(sorted(stats.items()))}
    print(f"{pkg:30s} {version:28s} raw {len(raw):6d} clean {len(fitted):6d} "
          f"(help pages {stats['help_pages']})", flush=True)
  return candidates, info


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--work_dir", default="/tmp/specdec_l10n", help="Scratch dir for the debs.")
  ap.add_argument("--out_dir", default=DEFAULT_OUT)
  ap.add_argument("--skip_fetch", action="store_true", help="Reuse the debs in --work_dir/debs.")
  ap.add_argument("--allow_other_versions", action="store_true",
                  help="Download the candidate versions instead of the pinned ones.")
  ap.add_argument("--max_short_fraction", type=float, default=MAX_SHORT_FRACTION,
                  help=f"Cap on the share of pairs whose English has <= {SHORT_WORDS} words.")
  ap.add_argument("--no_check", action="store_true",
                  help="Do not fail when the output's size is outside EXPECTED_LINES.")
  args = ap.parse_args(argv)
  t0 = time.time()
  os.makedirs(args.work_dir, exist_ok=True)
  existing = existing_splits(args.out_dir)  # Fails early if the benchmark files changed.
  if not args.skip_fetch:
    fetch(args.work_dir, args.allow_other_versions)
  tokens = Tokens()
  candidates, info = collect(args.work_dir, args.allow_other_versions, tokens)
  chosen = choose_translations(candidates)
  norm = build_data.normalize_source
  kept, dedup_stats = drop_existing(
      chosen, train_sources={norm(a) for a, _ in existing["train"]},
      heldout_sources={norm(a) for s in ("validation", "test") for a, _ in existing[s]},
      heldout_targets={norm(b) for s in ("validation", "test") for _, b in existing[s]})
  rows = sorted((hashlib.sha256(k.encode("utf-8")).hexdigest(), en, de)
                for k, (en, de, _) in kept.items())
  capped = cap_short(rows, args.max_short_fraction)
  out_rows = [(en, de) for _, en, de in capped]
  # Per package: distinct sources it contributed before and after de-duplication.
  for pkg in info:
    info[pkg]["stats"]["distinct_sources"] = 0
    info[pkg]["stats"]["in_output"] = 0
  out_keys = {norm(en) for en, _ in out_rows}
  for key, (_, _, pkgs) in chosen.items():
    for p in pkgs:
      info[p]["stats"]["distinct_sources"] += 1
      if key in out_keys:
        info[p]["stats"]["in_output"] += 1

  lo, hi = EXPECTED_LINES
  print(f"candidates {len(candidates)}, distinct sources {len(chosen)}, after de-dup against "
        f"the existing splits {len(kept)} ({dict(dedup_stats)}), after the short cap "
        f"{len(out_rows)} (expected {lo}..{hi})", flush=True)
  if not lo <= len(out_rows) <= hi and not args.no_check:
    raise SystemExit("unexpected number of output pairs; inspect the inputs (or --no_check)")

  rel = f"{TASK_DIR}/{OUT_NAME}"
  path = os.path.join(args.out_dir, rel)
  build_data.write_tsv_gz(path, out_rows)
  sha = build_data.sha256_file(path)
  counts_path = os.path.join(args.out_dir, "COUNTS.json")
  with open(counts_path) as f:
    counts = json.load(f)
  counts[rel] = {"lines": len(out_rows), "sha256": sha}
  with open(counts_path, "w") as f:
    json.dump(counts, f, indent=2, sort_keys=True)
    f.write("\n")
  if existing_splits(args.out_dir) != existing:
    raise SystemExit("the existing splits changed while building")

  summary = statistics(out_rows, existing["train"], tokens, kept=len(kept),
                       distinct=len(chosen), candidates=len(candidates),
                       dedup_stats=dedup_stats, max_short_fraction=args.max_short_fraction)
  summary["size_bytes"] = os.path.getsize(path)
  write_sources(os.path.join(args.out_dir, TASK_DIR, SOURCES_NAME), info, summary)
  write_license_section(os.path.join(args.out_dir, "LICENSES.md"), info, summary)
  print(json.dumps(summary, indent=1))
  print(f"wrote {path}: {len(out_rows)} lines, {summary['size_bytes'] / 1e6:.2f} MB, "
        f"{time.time() - t0:.0f} s")
  return 0


def statistics(out_rows, old_train, tokens, **extra):
  """Counts, length distributions and tokens/word of the new rows vs the old train split."""
  out = dict(extra)
  out["lines"] = len(out_rows)
  out["short_pairs"] = sum(is_short(en) for en, _ in out_rows)
  for name, rows in (("new", out_rows), ("old_train", old_train)):
    en_tok = tokens.count([a for a, _ in rows])
    de_tok = tokens.count([b for _, b in rows])
    en_w = [build_data.n_words(a) for a, _ in rows]
    de_w = [build_data.n_words(b) for _, b in rows]
    out[name] = {
        "pairs": len(rows),
        "en_tokens": length_stats(en_tok), "de_tokens": length_stats(de_tok),
        "en_words_histogram": histogram(en_w),
        "en_tokens_per_word": round(sum(en_tok) / max(1, sum(en_w)), 3),
        "de_tokens_per_word": round(sum(de_tok) / max(1, sum(de_w)), 3),
        "tokens_total": sum(en_tok) + sum(de_tok),
    }
  return out


def write_sources(path, info, summary):
  lines = [
      "# Sources of train_l10n.tsv.gz", "",
      "Written by `scripts/build_l10n_data.py`. Per Debian bookworm package: version, the "
      "licenses named in its `usr/share/doc/<pkg>/copyright` (DEP-5 `License:` fields, or a "
      "scan of a free-form file), German catalogs read, raw pairs (catalog entries with a "
      "translation plus aligned help blocks), pairs after cleaning, distinct English sources, "
      "and sources of that package in the output (a source shared by several packages counts "
      "for each).", "",
      "| package | version | licenses | catalogs | help pages | raw | clean | distinct | in output |",
      "|---|---|---|---:|---:|---:|---:|---:|---:|"]
  for pkg in sorted(info):
    i, s = info[pkg], info[pkg]["stats"]
    version = i["version"] + (f" (en-US from {i['english']})" if i.get("english") else "")
    lines.append(f"| `{pkg}` | {version} | {', '.join(i['licenses'])} | {i['catalogs']} | "
                 f"{s.get('help_pages', 0)} | {s.get('raw_pairs', 0)} | {s.get('clean_pairs', 0)} | "
                 f"{s.get('distinct_sources', 0)} | {s.get('in_output', 0)} |")
  lines += ["", "## Summary", "", "```", json.dumps(summary, indent=1, sort_keys=True), "```", "",
            "## Drop reasons per package", "", "```"]
  for pkg in sorted(info):
    lines.append(f"{pkg}: {json.dumps(info[pkg]['stats'], sort_keys=True)}")
  lines += ["```", "", "Deb sha256:", ""]
  lines += [f"- `{pkg}` {info[pkg]['deb_sha256']}" for pkg in sorted(info)]
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def license_section(info, summary):
  families = collections.Counter()
  for i in info.values():  # Each family once per package.
    families.update({re.split(r"[-_ .]", lic)[0] for lic in i["licenses"]})
  top = ", ".join(f"{k} {v}" for k, v in sorted(families.items(), key=lambda kv: (-kv[1], kv[0]))
                  if v >= 5)
  return f"""{LICENSE_BEGIN}
## wmt_style_ende/train_l10n.tsv.gz (English \\t German, extra train pairs)

Human translations from Debian 12 "bookworm" (main): the German gettext catalogs
(`.mo`) of {len(info) - len(MOZILLA)} packages (GNU tools, GNOME, KDE, MATE, Xfce,
LibreOffice, ...), the GNOME help pages (Mallard) that have a German version, and
the German language packs of Firefox ESR and Thunderbird paired with their en-US
strings (MPL-2.0), cleaned and de-duplicated
against the three splits above (whose files it does not change) by
`scripts/build_l10n_data.py`: {summary['lines']} pairs, at most
{summary['max_short_fraction']:.0%} of them with <= {SHORT_WORDS} English words. A
catalog is distributed under the license of its package (the usual header: "This
file is distributed under the same license as the ... package"), GNOME help under
CC-BY-SA-3.0; the pairs are redistributed under those licenses. Per package:
version, the licenses its `usr/share/doc/<pkg>/copyright` names, counts and deb
sha256 are in `wmt_style_ende/{SOURCES_NAME}`. License families named by at least
5 packages (number of packages): {top}. Copyleft (GPL, LGPL, MPL, CC-BY-SA) terms
apply to this file, as to the Ding (GPL-2+) pairs in train.tsv.gz.

```
python scripts/build_l10n_data.py --work_dir /tmp/specdec_l10n
```
{LICENSE_END}
"""


def write_license_section(path, info, summary):
  """Writes the l10n section into LICENSES.md, replacing a previous one."""
  with open(path) as f:
    text = f.read()
  section = license_section(info, summary)
  if LICENSE_BEGIN in text:
    head, rest = text.split(LICENSE_BEGIN, 1)
    tail = rest.split(LICENSE_END, 1)[1].lstrip("\n") if LICENSE_END in rest else ""
    text = head + section + tail
  else:
    text = text.rstrip("\n") + "\n\n" + section
  with open(path, "w") as f:
    f.write(text)


if __name__ == "__main__":
  sys.exit(main())
