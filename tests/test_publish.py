"""tools/publish.py: what goes to which Hub repository, with which arguments; offline, HfApi replaced by a fake."""
import huggingface_hub
import pytest

from tools import publish

TOKEN = "hf_fakeTokenThatMustNeverBePrinted"


class FakeApi:
    """Records the calls publish makes; `fail` raises the Hub's HTTP error on the first commit."""

    def __init__(self, token=None, fail=None):
        self.token, self.fail, self.repos, self.commits = token, fail, [], []

    def create_repo(self, repo_id, **kwargs):
        self.repos.append((repo_id, kwargs))

    def create_commit(self, repo_id, operations, **kwargs):
        if self.fail:
            raise self.fail
        self.commits.append((repo_id, {op.path_in_repo: open(op.path_or_fileobj, "rb").read() for op in operations},
                             kwargs))

        class Info:
            commit_url = f"https://huggingface.co/{repo_id}/commit/abc"

        return Info()


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    """models/ as the pipeline leaves it: the adapter with PEFT's placeholder README, the card, a GGUF."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    adapter = tmp_path / "models/adapter"
    adapter.mkdir(parents=True)
    for name, content in {"adapter_config.json": b"{}", "adapter_model.safetensors": b"weights",
                          "tokenizer.json": b"tok", "README.md": b"[More Information Needed]"}.items():
        (adapter / name).write_bytes(content)
    (tmp_path / "models/card").mkdir()
    (tmp_path / "models/card/README.md").write_bytes(b"---\nlibrary_name: peft\n---\n# the card")
    gguf = tmp_path / "models/gguf"
    gguf.mkdir()
    for name in ("gemma-3-270m-tr-q8_0.gguf", "Modelfile", "README.md"):
        (gguf / name).write_bytes(name.encode())
    return tmp_path


def test_publish_uploads_the_adapter_with_its_model_card_as_readme_in_one_commit(outputs):
    api = FakeApi()
    urls = publish.publish("me/gemma-tr", api=api)
    assert api.repos == [("me/gemma-tr", {"repo_type": "model", "private": False, "exist_ok": True})]
    [(repo, files, kwargs)] = api.commits
    assert repo == "me/gemma-tr" and kwargs["repo_type"] == "model"
    assert files == {"adapter_config.json": b"{}", "adapter_model.safetensors": b"weights", "tokenizer.json": b"tok",
                     "README.md": b"---\nlibrary_name: peft\n---\n# the card"}  # the card, not PEFT's placeholder
    assert urls == ["https://huggingface.co/me/gemma-tr/commit/abc"]


def test_publish_with_gguf_also_uploads_the_gguf_folder_to_its_own_private_repository(outputs):
    api = FakeApi()
    publish.publish("me/gemma-tr", gguf=True, private=True, api=api)
    assert [repo for repo, _ in api.repos] == ["me/gemma-tr", "me/gemma-tr-GGUF"]
    assert all(kwargs["private"] is True for _, kwargs in api.repos)
    assert api.commits[1][1] == {"gemma-3-270m-tr-q8_0.gguf": b"gemma-3-270m-tr-q8_0.gguf",
                                 "Modelfile": b"Modelfile", "README.md": b"README.md"}


def test_command_line_passes_the_token_from_the_environment_to_hfapi(outputs, monkeypatch, capsys):
    made = []
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda token: made.append(FakeApi(token)) or made[-1])
    publish.main(["me/gemma-tr", "--gguf"])
    assert made[0].token == TOKEN
    assert capsys.readouterr().out.split() == ["https://huggingface.co/me/gemma-tr/commit/abc",
                                               "https://huggingface.co/me/gemma-tr-GGUF/commit/abc"]


@pytest.mark.parametrize("broken, argv, message", [
    ("token", ["me/gemma-tr"], "error: HF_TOKEN is not set"),
    ("models/adapter/adapter_config.json", ["me/gemma-tr"], "error: models/adapter: no adapter"),
    ("models/card/README.md", ["me/gemma-tr"], "error: models/card/README.md: no model card"),
    ("models/gguf/gemma-3-270m-tr-q8_0.gguf", ["me/gemma-tr", "--gguf"], "error: models/gguf: no GGUF file"),
])
def test_missing_token_or_files_stop_with_one_line_before_any_upload(outputs, monkeypatch, broken, argv, message):
    made = []
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda token: made.append(FakeApi(token)) or made[-1])
    if broken == "token":
        monkeypatch.delenv("HF_TOKEN")
    else:
        (outputs / broken).unlink()
    with pytest.raises(SystemExit) as stop:
        publish.main(argv)
    assert str(stop.value).startswith(message) and "\n" not in str(stop.value)
    assert all(not api.repos and not api.commits for api in made)  # nothing was created or uploaded


def test_a_hub_refusal_is_one_line_that_never_shows_the_token(outputs, monkeypatch, capsys):
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    url = "https://huggingface.co/api/repos/create"
    refusal = HfHubHTTPError(f"401 Client Error: Unauthorized for url: {url}\nInvalid credentials in Authorization "
                             "header", response=httpx2.Response(401, request=httpx2.Request("POST", url)))
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda token: FakeApi(token, fail=refusal))
    with pytest.raises(SystemExit) as stop:
        publish.main(["me/gemma-tr"])
    assert str(stop.value) == ("error: uploading to me/gemma-tr failed: 401 Client Error: Unauthorized for url: "
                               "https://huggingface.co/api/repos/create")
    printed = capsys.readouterr()
    assert TOKEN not in str(stop.value) + printed.out + printed.err
