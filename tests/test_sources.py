"""Each source format on rows in the exact Hub schemas, the local file readers, and bad input."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.hub_layout import fineweb2_row
from pipeline.errors import PipelineError
from pipeline.params import Dataset
from pipeline.sources import BadRow, Record, Skip, data_files, read_file, to_row

TR = "Ankara, Türkiye'nin başkentidir ve İç Anadolu Bölgesi'nde yer alır."


def convert(fmt, row):
    return to_row("s", fmt, Record("x.jsonl:1", row))


def records(path: str, fmt: str = "text") -> list[Record]:
    """Every record of a local source, file by file, as prepare reads them."""
    from pathlib import Path

    return [record for file in data_files(Dataset(path=path, format=fmt), "p") for record in read_file(Path(file))]


def test_text_oscar2019_row():
    row = convert("text", {"id": 7, "text": TR})
    assert row == {"id": "7", "source": "s", "kind": "text", "text": TR, "messages": None,
                   "meta": {"url": None, "title": None}}


def test_text_fineweb2_row_keeps_url():
    fineweb = {"text": TR, "id": "<urn:uuid:1>", "dump": "CC-MAIN-2024-10", "url": "https://ornek.com.tr/a",
               "date": "2024-02-21T00:00:00Z", "file_path": "s3://x", "language": "tur", "language_score": 0.99,
               "language_script": "Latn", "minhash_cluster_size": 3, "top_langs": "{}"}
    row = convert("text", fineweb)
    assert (row["id"], row["meta"]["url"]) == ("<urn:uuid:1>", "https://ornek.com.tr/a")


def oscar2301(label="tr", warnings=()):
    return {"id": 1, "text": TR, "meta": {
        "warc_headers": {"warc-target-uri": "https://ornek.com.tr/", "warc-record-id": "<urn:uuid:2>"},
        "identification": {"label": label, "prob": 0.98}, "harmful_pp": 1200.5, "tlsh": "T1...",
        "quality_warnings": list(warnings), "categories": [], "sentence_identifications": []}}


def test_oscar2301_row_and_its_own_drops():
    assert convert("oscar", oscar2301())["meta"]["url"] == "https://ornek.com.tr/"
    with pytest.raises(Skip, match="source_language"):
        convert("oscar", oscar2301(label="az"))
    with pytest.raises(Skip, match="source_quality_warning"):
        convert("oscar", oscar2301(warnings=["short_sentences"]))


def test_wikipedia_joins_title_and_text():
    row = convert("wikipedia", {"id": "12", "url": "https://tr.wikipedia.org/wiki/Ankara", "title": "Ankara",
                                "text": "Türkiye'nin başkentidir."})
    assert row["text"] == "Ankara\n\nTürkiye'nin başkentidir."
    assert row["meta"] == {"url": "https://tr.wikipedia.org/wiki/Ankara", "title": "Ankara"}


def test_sharegpt_openhermes_roles_and_content_id():
    conversation = {"conversations": [
        {"from": "system", "value": "Yardımcı ol.", "weight": None},
        {"from": "human", "value": "Başkent neresi?", "weight": None},
        {"from": "gpt", "value": "Ankara.", "weight": 1.0}],
        "source": "airoboros2.2", "category": "orca", "id": None, "language": None, "model": None}
    row = convert("sharegpt", conversation)
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert row["kind"] == "chat" and row["text"] is None
    assert row["id"] == convert("sharegpt", conversation)["id"] and len(row["id"]) == 20


def test_alpaca_with_english_and_turkish_columns():
    english = convert("alpaca", {"instruction": "Özetle:", "input": "Uzun metin.", "output": "Kısa."})
    turkish = convert("alpaca", {"talimat": "Özetle:", "giriş": "Uzun metin.", "çıktı": "Kısa."})
    assert english["messages"] == turkish["messages"] == [
        {"role": "user", "content": "Özetle:\n\nUzun metin."}, {"role": "assistant", "content": "Kısa."}]


def test_alpaca_columns_with_stray_spaces():
    # a copy of merve/turkish_instructions names its columns "talimat", " giriş", " çıktı"
    row = convert("alpaca", {"talimat": "Özetle:", " giriş": "Uzun metin.", " çıktı": "Kısa."})
    assert row["messages"] == [{"role": "user", "content": "Özetle:\n\nUzun metin."},
                               {"role": "assistant", "content": "Kısa."}]


def test_wikipedia_title_is_kept_unless_the_body_opens_with_it_as_a_word():
    assert convert("wikipedia", {"title": "Ankara", "text": "Ankara, Türkiye'nin başkentidir."})["text"] == (
        "Ankara, Türkiye'nin başkentidir.")
    assert convert("wikipedia", {"title": "Ankara", "text": "Ankaragücü bir spor kulübüdür."})["text"] == (
        "Ankara\n\nAnkaragücü bir spor kulübüdür.")


def test_chats_with_the_same_texts_in_other_roles_get_other_ids():
    asked = [{"role": "user", "content": "Merhaba"}, {"role": "assistant", "content": "Selam"}]
    swapped = [{"role": "assistant", "content": "Merhaba"}, {"role": "user", "content": "Selam"}]
    assert convert("messages", {"messages": asked})["id"] != convert("messages", {"messages": swapped})["id"]


def test_aya_keeps_turkish_rows_only():
    row = {"inputs": "Başkent neresi?", "targets": "Ankara.", "language": "Turkish", "language_code": "tur",
           "annotation_type": "original-annotations", "user_id": "u1"}
    assert convert("aya", row)["messages"][1]["content"] == "Ankara."
    with pytest.raises(Skip):
        convert("aya", {**row, "language": "English", "language_code": "eng"})


def test_messages_format():
    row = convert("messages", {"messages": [{"role": "user", "content": "Selam"},
                                            {"role": "assistant", "content": "Merhaba!"}]})
    assert row["messages"][1] == {"role": "assistant", "content": "Merhaba!"}


@pytest.mark.parametrize("fmt,row,reason", [
    ("text", {"id": 1}, "field 'text' is NoneType"),
    ("text", {"id": 1, "text": 5}, "field 'text' is int"),
    ("text", {"id": 1, "text": "   "}, "field 'text' is empty"),
    ("sharegpt", {"conversations": [{"from": "robot", "value": "x"}]}, "unknown conversation role"),
    ("sharegpt", {"conversations": [{"from": "human", "value": "soru"}]}, "needs at least one user and one assistant"),
    ("messages", {"messages": "not a list"}, "not a non-empty list"),
    ("text", ["a", "list"], "row is list"),
    ("text", {"id": 1, "text": "bir \ud800 iki"}, r"field 'text' has an unpaired surrogate \(\\ud800\) at character 4"),
    ("messages", {"messages": [{"role": "user", "content": "Selam"}, {"role": "assistant", "content": "\udfff"}]},
     r"field 'messages\[1\].content' has an unpaired surrogate"),
    ("text", {"id": "a\ud83d", "text": TR}, "field 'id' has an unpaired surrogate"),
    ("text", {"id": True, "text": TR}, "field 'id' is bool"),
    ("oscar", {"text": TR, "meta": {"identification": "tr"}}, "unexpected field type"),
    ("oscar", {"text": TR, "meta": {"quality_warnings": [{"tiny": 1}]}}, "unexpected field type"),
    ("sharegpt", {"conversations": [{"from": ["human"], "value": "x"}]}, "unexpected field type"),
])
def test_malformed_rows_say_why(fmt, row, reason):
    with pytest.raises(BadRow, match=reason):
        convert(fmt, row)


def test_local_jsonl_reports_file_and_line_of_bad_lines(tmp_path):
    path = tmp_path / "web.jsonl"
    path.write_bytes(json.dumps({"id": 1, "text": TR}).encode() + b"\n{not json\n" + b'{"text": "\xff\xfe"}\n')
    got = records(str(path))
    assert [r.location for r in got] == [f"{path}:1", f"{path}:2", f"{path}:3"]
    assert "malformed JSON" in str(got[1].row) and "invalid UTF-8" in str(got[2].row)


def test_directory_and_glob_sources_read_in_sorted_order(tmp_path):
    for name, text in (("b.parquet", "ikinci"), ("a.parquet", "birinci")):
        pq.write_table(pa.Table.from_pylist([{"id": name, "text": text}]), tmp_path / name)
    for path in (str(tmp_path), str(tmp_path / "*.parquet")):
        assert [r.row["text"] for r in records(path)] == ["birinci", "ikinci"]


def test_a_glob_skips_folders_and_a_broken_parquet_file_is_named(tmp_path):
    (tmp_path / "sub").mkdir()  # matched by the glob, not a file
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": TR}) + "\n")
    (tmp_path / "notes.md").write_text("# not a data file\n")  # matched by the glob, not a data file
    assert len(records(str(tmp_path / "*"))) == 1
    (tmp_path / "b.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(PipelineError, match=rf"{tmp_path / 'b.parquet'}: unreadable parquet"):
        records(str(tmp_path / "*"))


HUB_ROWS = {  # one row per format, in its Hub schema
    "text": fineweb2_row(TR, 1),  # HuggingFaceFW/fineweb-2
    "oscar": oscar2301(),
    "wikipedia": {"id": "12", "url": "https://tr.wikipedia.org/wiki/Ankara", "title": "Ankara", "text": TR},
    "sharegpt": {"conversations": [{"from": "system", "value": "Yardımcı ol.", "weight": None},
                                   {"from": "human", "value": "Başkent neresi?", "weight": None},
                                   {"from": "gpt", "value": "Ankara.", "weight": 1.0}],
                 "source": "airoboros2.2", "category": "orca", "id": None, "model": None},
    "alpaca": {"talimat": "Özetle:", "giriş": TR, "çıktı": "Ankara başkenttir."},
    "aya": {"inputs": "Başkent neresi?", "targets": "Ankara.", "language": "Turkish", "language_code": "tur",
            "annotation_type": "original-annotations", "user_id": "u1"},
    "messages": {"messages": [{"role": "user", "content": "Selam"}, {"role": "assistant", "content": "Merhaba!"}]},
}


@pytest.mark.parametrize("fmt", sorted(HUB_ROWS))
@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_each_adapter_reads_its_hub_schema_from_local_files(tmp_path, fmt, suffix):
    """Through the file readers (parquet hands back Arrow's view of the nested fields), the same unified row."""
    path = tmp_path / f"rows{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist([HUB_ROWS[fmt]]), path)
    else:
        path.write_text(json.dumps(HUB_ROWS[fmt], ensure_ascii=False) + "\n", encoding="utf-8")
    [record] = records(str(path), fmt)
    assert to_row("s", fmt, record) == convert(fmt, HUB_ROWS[fmt])


def test_a_json_array_is_read_an_item_at_a_time(tmp_path):
    """OpenHermes-2.5 is one 1.94 GB JSON array: items come before the parser has seen the end of the file (a
    broken tail shows it), and a broken array stops with one line naming the file and the last good item."""
    path = tmp_path / "chats.json"
    path.write_text(json.dumps([HUB_ROWS["sharegpt"]] * 2)[:-1] + ", {broken", encoding="utf-8")
    stream = read_file(path)
    first = next(stream)
    assert first.location == f"{path}:item 1" and to_row("s", "sharegpt", first)
    with pytest.raises(PipelineError, match=rf"^{path}: not a valid JSON array after item 2: [^\n]*$"):
        list(stream)


def test_missing_local_path_names_the_param(tmp_path):
    with pytest.raises(PipelineError, match=r"^p: no .json/.jsonl/.parquet file at .*none.jsonl'$"):
        records(str(tmp_path / "none.jsonl"))


@pytest.mark.parametrize("path,local", [("wikimedia/wikipedia", False), ("squad", False), ("demo/data/webb", True),
                                        ("./data", True), ("data/*.jsonl", True), ("/abs/path", True),
                                        ("web.jsonl", True), ("~/corpus", True)])
def test_a_hub_id_is_name_or_owner_slash_name_and_anything_else_is_local(path, local):
    from pipeline.sources import is_local

    assert is_local(path) is local


def test_an_unreachable_hub_dataset_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dataset = Dataset(path="wikimedia/wikipedia", config="20231101.tr", format="wikipedia")
    with pytest.raises(PipelineError, match=r"^p: cannot load 'wikimedia/wikipedia' \(config '20231101.tr'\): "):
        data_files(dataset, "p")
