"""The committed demo corpus is exactly what demo/make_corpus.py writes, it holds the contaminants, and its real
text (LibreOffice's Turkish help) is Turkish prose that shares nothing with the out-of-domain evaluation set."""
import json
import re
import subprocess
import sys

from demo.make_corpus import HELP_WORDS, help_rows
from tests.tiny import REPO

OOD = REPO / "configs/eval/turkish_general.jsonl"
HELP = REPO / "demo/data/help.jsonl"


def rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_generator_reproduces_the_committed_files(tmp_path):
    script = (REPO / "demo/make_corpus.py").read_text().replace(
        'OUT = Path(__file__).resolve().parent / "data"', f'OUT = Path({str(tmp_path)!r})')
    (tmp_path / "make.py").write_text(script)
    subprocess.run([sys.executable, str(tmp_path / "make.py")], check=True)
    for name in ("web.jsonl", "wikipedia.parquet", "chats.json", "tr_regions.jsonl"):
        assert (tmp_path / name).read_bytes() == (REPO / "demo/data" / name).read_bytes(), name
    assert not (tmp_path / "help.jsonl").exists()  # an extract: only --extract-help writes it


def test_web_sample_has_each_kind_of_contaminant():
    texts = [row["text"] for row in rows(REPO / "demo/data/web.jsonl")]
    assert len(texts) != len(set(texts))  # exact duplicates
    assert any("ə" in t for t in texts)  # Azerbaijani
    assert any(t.startswith("The ") for t in texts)  # English
    assert any("Lorem ipsum" in t for t in texts) and any(len(t.split()) < 3 for t in texts)


def page(title: str, paragraphs: list[str]) -> str:
    body = "".join(f'<p id="par_{i}" class="paragraph" dir="auto">{p}</p>\n' for i, p in enumerate(paragraphs))
    return (f"<html><head><title>{title}</title></head><body><h1>{title}</h1>\n{body}"
            '<p class="tablecontentintable">Tablo hücresi</p></body></html>')


TURKISH = ("Bu iletişim penceresinde belgenin sayfa düzenini, kenar boşluklarını ve kağıt boyutunu "
           "ayarlayabilirsiniz. Yaptığınız değişiklikler yalnızca seçili sayfa biçemini kullanan sayfalara "
           "uygulanır ve belgenin geri kalanı olduğu gibi kalır.")
ENGLISH = "The following texts are changed to hyperlinks when you type them into a document."


def test_help_extraction_keeps_a_pages_turkish_paragraphs_under_its_title(tmp_path):
    (tmp_path / "swriter/01").mkdir(parents=True)
    (tmp_path / "swriter/01/page.html").write_text(page("Sayfa Biçemi", [TURKISH, ENGLISH, TURKISH, "Kısa.", TURKISH]))
    (tmp_path / "swriter/01/stub.html").write_text(page("Kısa Sayfa", [TURKISH]))  # under 60 Turkish words
    extracted = help_rows(tmp_path)
    assert [row["id"] for row in extracted] == ["swriter/01/page"]
    assert extracted[0]["text"] == f"Sayfa Biçemi\n{TURKISH}\n{TURKISH}\n{TURKISH}"
    assert extracted[0]["url"].endswith("/tr/text/swriter/01/page.html")


def test_help_extract_is_turkish_prose_of_the_stated_size():
    extract = rows(HELP)
    assert 40 <= len(extract) <= 80 and len({row["id"] for row in extract}) == len(extract)
    for row in extract:
        words = len(row["text"].split("\n", 1)[1].split())  # the paragraphs under the title
        assert HELP_WORDS[0] <= words <= HELP_WORDS[1], row["id"]
        assert row["url"].startswith("https://help.libreoffice.org/")
        assert set(row["text"]) & set("çğıöşüİ"), row["id"]
    assert sum(len(path.read_bytes()) for path in (REPO / "demo/data").iterdir()) < 500_000


def ngrams(text: str, n: int = 13) -> set[tuple[str, ...]]:
    tokens = re.findall(r"\w+", text.casefold())
    return {tuple(tokens[i: i + n]) for i in range(len(tokens) - n + 1)}


def test_out_of_domain_set_shares_no_13_word_sequence_with_any_demo_text():
    evaluation = set().union(*(ngrams(row["text"]) for row in rows(OOD)))
    demo = [row["text"] for row in rows(HELP) + rows(REPO / "demo/data/web.jsonl")]
    demo += [turn["value"] for chat in json.loads((REPO / "demo/data/chats.json").read_text())
             for turn in chat["conversations"]]
    assert evaluation and not any(ngrams(text) & evaluation for text in demo)


def test_out_of_domain_rows_are_paragraphs_with_their_source():
    evaluation = rows(OOD)
    assert 40 <= len(evaluation) <= 80
    assert {row["source"] for row in evaluation} == {"ataturk-speeches", "manpages-tr"}
    assert all(45 <= len(row["text"].split()) <= 90 for row in evaluation)
    assert len({row["text"] for row in evaluation}) == len(evaluation)
