"""Build the language-ID benchmark: real, translator-written text in about a hundred languages, Turkish among them.

    pip install polib==1.2.0              # reads gettext catalogs; the script needs nothing else but pip and apt
    python bench/langid/build.py [--cache /tmp/langid-sources]

Where the text comes from (each document records its package, version, file and license):
- gettext catalogs: the .po files inside the Django and Sphinx wheels (PyPI) and the .mo files of GTK, GLib and
  GNOME packages (Debian 12): interface strings, translated by people, in ~100 locales, Crimean Tatar, Kurmanji,
  Turkmen, Uzbek, Kyrgyz, Tatar, Uyghur, Kazakh and Azerbaijani among them;
- prose: LibreOffice's help pages (libreoffice-help-<lang>, HTML) and GNOME's user help (gnome-user-docs, Mallard
  XML), paragraphs a translator left untranslated (the same text as the English page's) dropped.
A catalog that copies Turkish translations wholesale is left out (`copies_turkish`), and so is any other
language's string that a Turkish catalog has too. Strings or paragraphs of one source file are grouped, in their order, into documents of 50-150 words (a
file with fewer is skipped). Placeholders, markup and menu mnemonics are removed: they are not text.
Mixed documents are made from the same pools: Turkish with an English paragraph (Turkish), a Turkish chat whose
answer is English and English with one Turkish sentence (both not Turkish), and all-Turkish chats.

Writes bench/langid/benchmark.jsonl.gz (one document a line: id, lang, script, kind, texts, turkish, origin,
license) and bench/langid/SOURCES.md. The same package versions give the same bytes; Debian's point releases
replace packages, so a rebuild later may pick newer translations (the versions used are in SOURCES.md).
"""
from __future__ import annotations

import argparse
import gzip
import html
import json
import random
import re
import subprocess
import sys
import unicodedata
import xml.etree.ElementTree as ElementTree
from collections import Counter, defaultdict
from pathlib import Path

import polib

HERE = Path(__file__).resolve().parent
OUT = HERE / "benchmark.jsonl.gz"
SOURCES = HERE / "SOURCES.md"
WHEELS = {"django": ("5.2.19", "BSD-3-Clause"), "sphinx": ("9.0.4", "BSD-2-Clause")}
CATALOG_DEBS = {"libgtk-3-common": "LGPL-2+", "libgtk2.0-common": "LGPL-2+", "libglib2.0-data": "LGPL-2.1+",
                "gnome-control-center-data": "GPL-2+", "gnome-desktop3-data": "LGPL-2+",
                "evolution-data-server-common": "LGPL-2+"}
HELP_LANGUAGES = ["ca", "cs", "da", "de", "el", "en-us", "es", "et", "eu", "fi", "fr", "gl", "hu", "id", "it", "nl",
                  "pl", "pt", "pt-br", "ru", "sk", "sl", "sv", "tr", "vi"]
MIN_WORDS, MAX_WORDS = 50, 150
PER_SOURCE = 6  # documents of one language from one package, at most
PER_LANGUAGE = 40
NEIGHBOURS = {"az", "azb", "crh", "kk", "ku", "ky", "tk", "tt", "ug", "uz"}  # Turkic, or Kurdish: the hard cases
NEIGHBOUR_PER_SOURCE, NEIGHBOUR_PER_LANGUAGE = 20, 80
TURKISH_PER_SOURCE = {"libreoffice-help-tr": 150, "gnome-user-docs": 120, "django": 60, "sphinx": 30}
TURKISH_PER_CATALOG_DEB = 40
MIXED = 40  # documents of each mixed kind
COPIED_FROM_TURKISH = 0.15  # GNOME's Crimean Tatar control center: 0.17; the other large catalogs: 0.10 or less
# locale -> benchmark language where the locale's own code is not it
LANGUAGE = {"az_IR": "azb", "kmr": "ku", "nb_NO": "nb", "no": "nb", "en-us": "en", "pt-br": "pt", "C": "en",
            "zh_TW.Big5": "zh"}
SCRIPTS = {"LATIN": "Latn", "CYRILLIC": "Cyrl", "ARABIC": "Arab", "GREEK": "Grek", "CJK": "Hani", "HANGUL": "Hang",
           "HIRAGANA": "Jpan", "KATAKANA": "Jpan", "THAI": "Thai", "DEVANAGARI": "Deva", "GEORGIAN": "Geor",
           "ARMENIAN": "Armn", "HEBREW": "Hebr", "BENGALI": "Beng", "TAMIL": "Taml", "TELUGU": "Telu",
           "KANNADA": "Knda", "MALAYALAM": "Mlym", "GUJARATI": "Gujr", "GURMUKHI": "Guru", "KHMER": "Khmr",
           "MYANMAR": "Mymr", "SINHALA": "Sinh", "LAO": "Laoo", "TIBETAN": "Tibt", "ETHIOPIC": "Ethi",
           "ORIYA": "Orya", "TIFINAGH": "Tfng", "THAANA": "Thaa"}
PLACEHOLDER = re.compile(r"%\([^)]*\)[-+ #0-9.]*[a-zA-Z]|%[-+ #0-9.]*[sdifuxXcrl]|%\d*\$?[sd]|\{[^{}]*\}|<[^>]*>"
                         r"|\$\{?\w+\}?|\\[nt]")
MNEMONIC = re.compile(r"(?<!\w)[_&](?=\w)")


def language(locale: str) -> str:
    return LANGUAGE.get(locale) or re.split(r"[_@.-]", locale)[0]


def script(text: str) -> str:
    scripts = Counter(unicodedata.name(c, "UNKNOWN").split()[0] for c in text if c.isalpha())
    name = scripts.most_common(1)[0][0] if scripts else "UNKNOWN"
    return SCRIPTS.get(name, name.title())


def words(text: str) -> int:
    """Words, or for scripts written without spaces (Chinese, Japanese, Thai...) characters / 6."""
    return max(len(text.split()), len(re.sub(r"\s", "", text)) // 6)


def clean(text: str) -> str:
    text = MNEMONIC.sub("", PLACEHOLDER.sub(" ", html.unescape(text)))
    return " ".join(text.split())


def is_text(text: str) -> bool:
    """Words, not a format string, a key name or a lone label."""
    letters = sum(c.isalpha() for c in text)
    return letters >= 12 and letters >= 0.6 * len(text.replace(" ", ""))


def documents(pieces: list[str], rng: random.Random) -> list[str]:
    """Consecutive pieces of one file, in order, grouped into documents of MIN_WORDS-MAX_WORDS words."""
    out, current, target = [], [], rng.randint(MIN_WORDS, MAX_WORDS)
    for piece in pieces:
        current.append(piece)
        count = words("\n".join(current))
        if count >= target:
            if count <= MAX_WORDS * 1.3:
                out.append("\n".join(current))
            current, target = [], rng.randint(MIN_WORDS, MAX_WORDS)
    return out


def run(command: list[str], cwd: Path) -> None:
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)


def download(cache: Path) -> dict[str, str]:
    """Fetch every package once into `cache`; returns each package's version."""
    versions = {}
    wheels, debs = cache / "wheels", cache / "debs"
    wheels.mkdir(parents=True, exist_ok=True)
    debs.mkdir(parents=True, exist_ok=True)
    for name, (version, _) in WHEELS.items():
        if not list(wheels.glob(f"{name}-{version}-*.whl")):
            run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(wheels), f"{name}=={version}"], cache)
        target = cache / name
        if not target.is_dir():
            run([sys.executable, "-m", "zipfile", "-e", str(next(wheels.glob(f"{name}-{version}-*.whl"))), str(target)],
                cache)
        versions[name] = version
    packages = [*CATALOG_DEBS, "gnome-user-docs", *(f"libreoffice-help-{lang}" for lang in HELP_LANGUAGES)]
    missing = [name for name in packages if not list(debs.glob(f"{name}_*.deb"))]
    if missing:
        run(["apt-get", "download", *missing], debs)
    for name in packages:
        deb = next(debs.glob(f"{name}_*.deb"))
        versions[name] = deb.name.split("_")[1].replace("%3a", ":")
        target = cache / name
        if not target.is_dir():
            run(["dpkg-deb", "-x", str(deb), str(target)], cache)
    return versions


def catalog_pieces(entries) -> list[str]:
    pieces = []
    for entry in entries:
        if entry.obsolete or "fuzzy" in entry.flags:
            continue
        translated = entry.msgstr or (entry.msgstr_plural or {}).get(0, "")
        if not translated or translated == entry.msgid:
            continue
        text = clean(translated)
        if is_text(text) and text != clean(entry.msgid):
            pieces.append(text)
    return pieces


def copies_turkish(package: str, name: str, entries, turkish: dict) -> bool:
    """A catalog whose translations are the Turkish catalog's own for COPIED_FROM_TURKISH of its strings or more
    fills its gaps with Turkish, and its near-copies too ("Müzik CD'leri için uygulama seçin" in GNOME's Crimean
    Tatar): its strings are not reliably the language it is named for."""
    translated = [entry for entry in entries if entry.msgstr and entry.msgstr != entry.msgid]
    copied = sum(turkish.get((package, name, entry.msgid)) == entry.msgstr for entry in translated)
    return copied >= COPIED_FROM_TURKISH * max(len(translated), 1)


def catalogs(cache: Path, versions: dict) -> dict[tuple[str, str], list[dict]]:
    """(language, package) -> documents from its gettext catalogs."""
    found = defaultdict(list)
    rng = random.Random(1)
    sources = [(name, WHEELS[name][1], sorted((cache / name).glob("**/locale/*/LC_MESSAGES/*.po")))
               for name in WHEELS]
    sources += [(name, license_, sorted((cache / name).glob("usr/share/locale/*/LC_MESSAGES/*.mo")))
                for name, license_ in CATALOG_DEBS.items()]
    read = lambda path: polib.pofile(str(path)) if path.suffix == ".po" else polib.mofile(str(path))  # noqa: E731
    # Some catalogs fill gaps with another language's strings (GNOME's Crimean Tatar with Turkish ones): a string
    # that a Turkish catalog has too is Turkish, not the other language's
    turkish = {piece for _, _, files in sources for path in files if language(path.parent.parent.name) == "tr"
               for piece in catalog_pieces(read(path))}
    turkish_translations = {(package, path.name, entry.msgid): entry.msgstr for package, _, files in sources
                            for path in files if language(path.parent.parent.name) == "tr"
                            for entry in read(path) if entry.msgstr}
    seen = defaultdict(set)  # a language's strings already used: GTK 2 and 3 share most of theirs
    for package, license_, files in sources:
        for path in files:
            locale = path.parent.parent.name
            lang = language(locale)
            if lang == "en" and package in WHEELS:  # the source language: its "translations" are spelling variants
                continue
            entries = read(path)
            if lang != "tr" and copies_turkish(package, path.name, entries, turkish_translations):
                continue
            pieces = [p for p in catalog_pieces(entries) if p not in seen[lang] and (lang == "tr" or p not in turkish)]
            seen[lang].update(pieces)
            relative = str(path.relative_to(cache / package))
            for text in documents(pieces, rng):
                found[(lang, package)].append({"texts": [text], "origin": {"package": package,
                                               "version": versions[package], "file": relative, "locale": locale},
                                               "license": license_})
    return found


def html_paragraphs(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    # paragraphs and headings of the page itself (they carry ids), not the navigation around it
    found = re.findall(r"<(p|h\d) id=\"(?:par|hd)_id[^>]*>(.*?)</\1>", text, flags=re.S)
    return [" ".join(html.unescape(re.sub(r"<[^>]*>", " ", inner)).split()) for _, inner in found]


def page_paragraphs(path: Path) -> list[str]:
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError:
        return []
    ns = "{http://projectmallard.org/1.0/}"
    return [" ".join("".join(node.itertext()).split()) for node in root.iter() if node.tag in (f"{ns}p", f"{ns}title")]


def prose(cache: Path, versions: dict) -> dict[tuple[str, str], list[dict]]:
    """(language, package) -> documents of help pages, without the paragraphs left in English."""
    found = defaultdict(list)
    rng = random.Random(2)
    english_help = cache / "libreoffice-help-en-us/usr/share/libreoffice/help/en-US"
    for lang_code in HELP_LANGUAGES:
        package = f"libreoffice-help-{lang_code}"
        root = next((cache / package / "usr/share/libreoffice/help").glob("*/text"), None)
        if root is None:
            continue
        locale = root.parent.name
        for path in sorted(root.glob("**/*.html")):
            paragraphs = [p for p in html_paragraphs(path) if is_text(p)]
            if lang_code != "en-us":
                original = english_help / path.relative_to(root.parent)
                english = set(html_paragraphs(original)) if original.is_file() else set()
                paragraphs = [p for p in paragraphs if p not in english]
            for text in documents(paragraphs, rng):
                found[(language(lang_code), package)].append({
                    "texts": [text], "origin": {"package": package, "version": versions[package],
                                                "file": str(path.relative_to(cache / package)), "locale": locale},
                    "license": "MPL-2.0"})
    help_root = cache / "gnome-user-docs/usr/share/help"
    for directory in sorted(help_root.iterdir()):
        for path in sorted((directory / "gnome-help").glob("*.page")):
            paragraphs = [p for p in page_paragraphs(path) if is_text(p)]
            if directory.name != "C":
                original = help_root / "C/gnome-help" / path.name
                english = set(page_paragraphs(original)) if original.is_file() else set()
                paragraphs = [p for p in paragraphs if p not in english]
            for text in documents(paragraphs, rng):
                found[(language(directory.name), "gnome-user-docs")].append({
                    "texts": [text], "origin": {"package": "gnome-user-docs",
                                                "version": versions["gnome-user-docs"],
                                                "file": str(path.relative_to(cache / "gnome-user-docs")),
                                                "locale": directory.name},
                    "license": "CC-BY-SA-3.0"})
    return found


def chosen(found: dict[tuple[str, str], list[dict]], rng: random.Random) -> list[dict]:
    """A sample spread over each language's packages and files (not only the first files of one)."""
    by_language = defaultdict(dict)
    for (lang, package), docs in sorted(found.items()):
        if lang == "tr":
            cap = TURKISH_PER_SOURCE.get(package, TURKISH_PER_CATALOG_DEB)
        else:
            cap = NEIGHBOUR_PER_SOURCE if lang in NEIGHBOURS else PER_SOURCE
        by_language[lang][package] = rng.sample(docs, min(cap, len(docs)))
    out = []
    for lang, packages in sorted(by_language.items()):
        picked = []
        queues = [list(docs) for _, docs in sorted(packages.items())]
        limit = (sum(map(len, queues)) if lang == "tr" else NEIGHBOUR_PER_LANGUAGE if lang in NEIGHBOURS
                 else PER_LANGUAGE)
        while len(picked) < limit and any(queues):  # round robin over the packages
            for queue in queues:
                if queue and len(picked) < limit:
                    picked.append(queue.pop(0))
        out += [{**doc, "lang": lang, "kind": "text"} for doc in picked]
    return out


def lines_of(doc: dict) -> list[str]:
    return doc["texts"][0].split("\n")


def mixed(found: dict[tuple[str, str], list[dict]], rng: random.Random) -> list[dict]:
    """Turkish and English together, from the help pages' prose."""
    prose_of = lambda lang: [doc for package in ("gnome-user-docs", f"libreoffice-help-{lang}")  # noqa: E731
                             for doc in found.get(("en" if lang == "en-us" else lang, package), [])]
    turkish, english = prose_of("tr"), prose_of("en-us")
    english_paragraphs = [(line, doc) for doc in english for line in lines_of(doc) if 15 <= len(line.split()) <= 40]
    turkish_lines = [(line, doc) for doc in turkish for line in lines_of(doc) if 8 <= len(line.split()) <= 40]
    made = []

    def add(kind: str, texts: list[str], lang: str, parts: list[dict]) -> None:
        made.append({"texts": texts, "lang": lang, "kind": kind, "turkish": lang == "tr",
                     "origin": [part["origin"] for part in parts],
                     "license": " and ".join(sorted({part["license"] for part in parts}))})

    for doc in rng.sample([d for d in turkish if words(d["texts"][0]) >= 80], MIXED):
        paragraph, source = rng.choice(english_paragraphs)
        lines = lines_of(doc)
        at = rng.randint(1, max(1, len(lines) - 1))
        add("turkish_with_english_paragraph", ["\n".join(lines[:at] + [paragraph] + lines[at:])], "tr",
            [doc, source])
    for doc, answer in zip(rng.sample(turkish, MIXED), rng.sample(english, MIXED)):
        add("chat_turkish_question_english_answer", [rng.choice(lines_of(doc)), answer["texts"][0]], "en",
            [doc, answer])
    for question, answer in zip(rng.sample(turkish, MIXED), rng.sample(turkish, MIXED)):
        add("chat_turkish", [rng.choice(lines_of(question)), answer["texts"][0]], "tr", [question, answer])
    for doc in rng.sample(english, MIXED):
        lines = lines_of(doc)
        at = rng.randint(0, len(lines))
        sentence, source = rng.choice(turkish_lines)
        add("english_with_turkish_sentence", ["\n".join(lines[:at] + [sentence] + lines[at:])], "en", [doc, source])
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/langid-sources"))
    args = parser.parse_args()
    versions = download(args.cache)
    rng = random.Random(0)
    found = catalogs(args.cache, versions)
    for key, docs in prose(args.cache, versions).items():
        found[key] += docs
    docs = chosen(found, rng)
    docs += mixed(found, rng)
    counts: Counter = Counter()
    with gzip.GzipFile(OUT, "wb", mtime=0) as raw:
        for doc in docs:
            counts[doc["lang"]] += 1
            record = {"id": f"{doc['lang']}-{doc['kind']}-{counts[doc['lang']]:04d}", "lang": doc["lang"],
                      "script": script(" ".join(doc["texts"])), "kind": doc["kind"], "texts": doc["texts"],
                      "turkish": doc.get("turkish", doc["lang"] == "tr"), "origin": doc["origin"],
                      "license": doc["license"]}
            raw.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
    lines = ["# Language-ID benchmark sources", "", f"Built by `bench/langid/build.py`: {len(docs)} documents, "
             f"{len(counts)} languages.", "", "| package | version | license |", "|---|---|---|"]
    licenses = {**{name: license_ for name, (_, license_) in WHEELS.items()}, **CATALOG_DEBS,
                "gnome-user-docs": "CC-BY-SA-3.0"}
    for package in sorted(versions):
        lines.append(f"| {package} | {versions[package]} | {licenses.get(package, 'MPL-2.0')} |")
    lines += ["", "Documents per language: " + ", ".join(f"{lang} {n}" for lang, n in sorted(counts.items())), ""]
    SOURCES.write_text("\n".join(lines))
    print(f"{len(docs)} documents, {len(counts)} languages -> {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
