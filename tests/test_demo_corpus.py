"""The committed demo corpus is exactly what demo/make_corpus.py writes, and it holds the contaminants."""
import json
import subprocess
import sys

from tests.tiny import REPO


def test_generator_reproduces_the_committed_files(tmp_path):
    script = (REPO / "demo/make_corpus.py").read_text().replace(
        'OUT = Path(__file__).resolve().parent / "data"', f'OUT = Path({str(tmp_path)!r})')
    (tmp_path / "make.py").write_text(script)
    subprocess.run([sys.executable, str(tmp_path / "make.py")], check=True)
    for name in ("web.jsonl", "wikipedia.parquet", "chats.json", "tr_regions.jsonl"):
        assert (tmp_path / name).read_bytes() == (REPO / "demo/data" / name).read_bytes(), name


def test_web_sample_has_each_kind_of_contaminant():
    texts = [json.loads(line)["text"] for line in (REPO / "demo/data/web.jsonl").read_text().splitlines()]
    assert len(texts) != len(set(texts))  # exact duplicates
    assert any("ə" in t for t in texts)  # Azerbaijani
    assert any(t.startswith("The ") for t in texts)  # English
    assert any("Lorem ipsum" in t for t in texts) and any(len(t.split()) < 3 for t in texts)
