"""A merged checkpoint as one GGUF file for llama.cpp and Ollama, with the Ollama Modelfile beside it.

The conversion is llama.cpp's own: its `convert_hf_to_gguf.py` (with the `gguf-py` of the same llama.cpp
commit, which the script puts on its own path) writes bf16, f16 or q8_0; the k-quants (q4_k_m, ...) come from
llama.cpp's quantizer through llama-cpp-python's bindings (`llama_model_quantize`). Both are llama.cpp at the
commit llama-cpp-python vendors: its wheel installs the library, and the install step extracts the converter
from the same source package into `<prefix>/share/llama.cpp` (PyPI ships the converter in no package of its
own that leaves the pinned `gguf` alone).
"""
from __future__ import annotations

import ctypes
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline.errors import PipelineError

log = logging.getLogger("gguf")

CONVERTER_ENV = "LLAMA_CPP_CONVERTER"
DEFAULT_CONVERTER = Path(sys.prefix) / "share" / "llama.cpp" / "convert_hf_to_gguf.py"
# What the converter writes itself; every other type is quantized from its bf16 output by llama.cpp.
CONVERTER_TYPES = ("bf16", "f16", "q8_0")
# llama.cpp's quantizer types that need no importance matrix (the IQ types do, from a calibration run).
QUANTIZER_TYPES = ("q6_k", "q5_k_m", "q5_k_s", "q5_0", "q4_k_m", "q4_k_s", "q4_0", "q3_k_m", "q2_k")
TYPES = CONVERTER_TYPES + QUANTIZER_TYPES

# Ollama reads Go templates, not the Jinja ones of configs/chat_templates: these render the same text.
# No BOS: llama.cpp adds it from the GGUF's metadata. Gemma 3 has no system role: its text opens the first user
# turn, followed by a blank line, as in gemma3.jinja.
GEMMA3_TEMPLATE = """\
{{- $system := "" }}
{{- range .Messages }}{{ if eq .Role "system" }}{{ $system = .Content }}{{ end }}{{ end }}
{{- $first := true }}
{{- range $i, $m := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq $m.Role "user" }}<start_of_turn>user
{{ if and $first $system }}{{ $system }}

{{ end }}{{ $m.Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- $first = false }}
{{- else if eq $m.Role "assistant" }}<start_of_turn>model
{{ $m.Content }}<end_of_turn>
{{ end }}
{{- end }}"""

# Gemma 4 has a native system role; every turn is bracketed by <|turn> and <turn|>, as in gemma4.jinja.
GEMMA4_TEMPLATE = """\
{{- range $i, $m := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq $m.Role "assistant" }}<|turn>model
{{ $m.Content }}<turn|>
{{ else }}<|turn>{{ $m.Role }}
{{ $m.Content }}<turn|>
{{ if $last }}<|turn>model
{{ end }}
{{- end }}
{{- end }}"""

# The end-of-turn marker, and the next turn's opening in case a model skips it.
FAMILIES = {
    "gemma3": (GEMMA3_TEMPLATE, ["<end_of_turn>", "<start_of_turn>"]),
    "gemma4": (GEMMA4_TEMPLATE, ["<turn|>", "<|turn>"]),
}


def check_type(gguf_type: str) -> None:
    if gguf_type not in TYPES:
        raise PipelineError(f"export.gguf: unknown type {gguf_type!r}; one of {', '.join(TYPES)}")


def converter() -> Path:
    path = Path(os.environ.get(CONVERTER_ENV) or DEFAULT_CONVERTER)
    if not path.is_file():
        raise PipelineError(
            f"export.gguf: llama.cpp's converter is not at {path}; run `make gguf` (it installs "
            f"requirements-gguf.txt and extracts convert_hf_to_gguf.py from llama-cpp-python's source package) or "
            f"set {CONVERTER_ENV}"
        )
    return path


def convert(checkpoint: Path, out: Path, outtype: str) -> None:
    """llama.cpp's converter in its own process: it imports its own gguf-py, not the installed `gguf`."""
    command = [sys.executable, str(converter()), str(checkpoint), "--outfile", str(out), "--outtype", outtype]
    log.info("converting %s to %s GGUF", checkpoint, outtype)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not out.is_file():
        lines = (result.stderr or result.stdout).strip().splitlines() or [f"exit code {result.returncode}"]
        raise PipelineError(f"export.gguf: llama.cpp's converter failed on {checkpoint}: {lines[-1]}")


def quantizer(gguf_type: str):
    try:
        import llama_cpp
    except ImportError:
        raise PipelineError(f"export.gguf: {gguf_type} needs llama.cpp's quantizer: run `make gguf` "
                            "(requirements-gguf.txt)") from None
    return llama_cpp


def check_tools(gguf_type: str) -> None:
    """Everything `write_gguf` needs is installed: checked before an hour of merging, not after."""
    check_type(gguf_type)
    converter()
    if gguf_type in QUANTIZER_TYPES:
        quantizer(gguf_type)


def quantize(source: Path, out: Path, gguf_type: str, threads: int | None = None) -> None:
    llama_cpp = quantizer(gguf_type)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{gguf_type.upper()}")
    params.nthread = threads or len(os.sched_getaffinity(0))
    log.info("quantizing %s to %s", source.name, gguf_type)
    if llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params)) != 0:
        raise PipelineError(f"export.gguf: llama.cpp could not quantize {source} to {gguf_type}")


def write_gguf(checkpoint: Path, out: Path, gguf_type: str) -> None:
    """`checkpoint` (a transformers checkpoint with its tokenizer and chat template) as a `gguf_type` GGUF."""
    check_type(gguf_type)
    if gguf_type in CONVERTER_TYPES:
        convert(checkpoint, out, gguf_type)
        return
    # bf16 first: lossless from the bf16 merge, and what llama.cpp's quantizer expects as input
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".gguf-bf16-") as tmp:
        full = Path(tmp) / "model-bf16.gguf"
        convert(checkpoint, full, "bf16")
        quantize(full, out, gguf_type)


def family(model_type: str) -> str:
    """configs' `model_type` (gemma3, gemma3_text, gemma4, gemma4_text) to the chat template family."""
    for name in FAMILIES:
        if model_type.startswith(name):
            return name
    raise PipelineError(f"export.gguf: no Ollama chat template for model type {model_type!r} (Gemma 3 and 4 only)")


def modelfile(gguf_name: str, model_family: str) -> str:
    """Ollama's Modelfile for the GGUF beside it: `ollama create <name> -f Modelfile`."""
    template, stops = FAMILIES[model_family]
    lines = [
        "# ollama create gemma-tr -f Modelfile && ollama run gemma-tr",
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{template}"""',
        *(f'PARAMETER stop "{stop}"' for stop in stops),
    ]
    return "\n".join(lines) + "\n"
