"""pipeline.attention: packed rows through torch's varlen attention (here its CPU reference path) give each
document the logits it gets alone, with Gemma 3's sliding window, and unsupported inputs are refused."""
import pytest
import torch

from pipeline.attention import (
    VARLEN,
    document_bounds,
    register_varlen_attention,
    varlen_attention_forward,
)
from pipeline.errors import PipelineError

WINDOW = 4
LENGTHS = [7, 12, 5]  # two documents longer than the window


@pytest.fixture(scope="module")
def model():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, sliding_window=WINDOW, layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=2, attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    return Gemma3ForCausalLM(config).eval()


def logits(model, implementation: str, input_ids, **kwargs) -> torch.Tensor:
    model.set_attn_implementation(implementation)
    with torch.no_grad():
        return model(input_ids=input_ids, use_cache=False, **kwargs).logits


def packed_row(seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    documents = [torch.randint(3, 64, (n,), generator=generator) for n in LENGTHS]
    positions = torch.cat([torch.arange(n) for n in LENGTHS])[None]
    return documents, torch.cat(documents)[None], positions


def test_registers_name_transformers_accepts(model):
    assert register_varlen_attention() == VARLEN
    model.set_attn_implementation(VARLEN)
    assert model.config._attn_implementation == VARLEN


@pytest.mark.parametrize("alone", ["sdpa", "eager"])
def test_packed_documents_match_each_document_alone(model, alone):
    register_varlen_attention()
    documents, input_ids, positions = packed_row()
    packed = logits(model, VARLEN, input_ids, position_ids=positions)[0]
    expected = torch.cat([logits(model, alone, d[None])[0] for d in documents])
    torch.testing.assert_close(packed, expected, atol=1e-4, rtol=1e-4)


def test_collator_bounds_give_the_same_logits(model):
    """TRL's padding-free collator passes cu_seq_lens_q / max_length_q along with position ids."""
    register_varlen_attention()
    _, input_ids, positions = packed_row()
    cu = torch.tensor([0, 7, 19, 24], dtype=torch.int32)
    from_collator = logits(model, VARLEN, input_ids, position_ids=positions, cu_seq_lens_q=cu, cu_seq_lens_k=cu,
                           max_length_q=12, max_length_k=12)
    torch.testing.assert_close(from_collator, logits(model, VARLEN, input_ids, position_ids=positions))


def test_checks_would_catch_cross_document_attention_and_a_wrong_window(model):
    """The comparison above is sensitive: one document spanning the row, or a window one token wider, differ."""
    register_varlen_attention()
    documents, input_ids, positions = packed_row()
    expected = torch.cat([logits(model, "sdpa", d[None])[0] for d in documents])
    one_document = logits(model, VARLEN, input_ids)[0]  # no position ids: the row is one sequence
    assert (one_document - expected).abs().max() > 1e-2
    model.config.sliding_window = WINDOW + 1  # layers read their window at init: rebuild them
    try:
        wider = type(model)(model.config).eval()
        wider.load_state_dict(model.state_dict())
        assert (logits(wider, VARLEN, input_ids, position_ids=positions)[0] - expected).abs().max() > 1e-3
    finally:
        model.config.sliding_window = WINDOW


def test_unpacked_batch_matches_sdpa(model):
    """Eval batches may come as rows of one document each, all the same length, without position ids."""
    register_varlen_attention()
    input_ids = torch.randint(3, 64, (3, 10), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(logits(model, VARLEN, input_ids), logits(model, "sdpa", input_ids),
                               atol=1e-4, rtol=1e-4)


def test_gradients_stay_within_documents(model):
    register_varlen_attention()
    _, input_ids, positions = packed_row()
    model.set_attn_implementation(VARLEN)
    embeds = model.get_input_embeddings()(input_ids).detach().requires_grad_()
    model(inputs_embeds=embeds, position_ids=positions, use_cache=False).logits[0, 6].sum().backward()
    touched = embeds.grad[0].abs().sum(-1) > 0
    assert touched[:7].all() and not touched[7:].any()  # the first document's last token sees only its document


@pytest.mark.parametrize("positions, bounds", [
    ([[0, 1, 2, 0, 1, 0, 1, 2, 3]], ([0, 3, 5, 9], 4)),
    ([[0, 1, 2], [0, 1, 2]], ([0, 3, 6], 3)),  # unpacked rows: each row is a document
    ([[0, 1, 2, 3], [0, 1, 0, 1]], ([0, 4, 6, 8], 4)),  # a document never spans two rows
    ([[5, 6, 7, 0, 1]], ([0, 3, 5], 3)),  # a document starts wherever positions do not step by 1
    ([[0, 1, 2, 0, 0, 0]], ([0, 3, 4, 5, 6], 3)),  # TRL's trailing padding: one-token documents
])
def test_document_bounds_from_position_ids(positions, bounds):
    positions = torch.tensor(positions)
    cu, longest = document_bounds(positions, *positions.shape)
    assert (cu.tolist(), longest) == bounds
    assert cu.dtype == torch.int32


def test_document_bounds_without_position_ids_and_from_the_collator():
    assert [x if isinstance(x, int) else x.tolist() for x in document_bounds(None, 2, 5)] == [[0, 5, 10], 5]
    cu = torch.tensor([0, 2, 7])
    assert document_bounds(None, 1, 7, cu, 5)[1] == 5
    assert document_bounds(None, 1, 7, cu)[1] == 5
    with pytest.raises(PipelineError, match="one flattened row"):
        document_bounds(None, 2, 7, cu, 5)


def test_padded_rows_are_refused(model):
    register_varlen_attention()
    input_ids = torch.randint(3, 64, (2, 6))
    model.set_attn_implementation(VARLEN)
    logits(model, VARLEN, input_ids, attention_mask=torch.ones(2, 6, dtype=torch.long))  # no padding: fine
    with pytest.raises(PipelineError, match="must not be padded"):
        logits(model, VARLEN, input_ids, attention_mask=torch.tensor([[1] * 6, [1] * 4 + [0] * 2]))


@pytest.mark.parametrize("kwargs, message", [
    ({"softcap": 50.0}, "softcapping"),
    ({"dropout": 0.1}, "dropout"),
    ({"is_causal": False}, "causal attention only"),
])
def test_unsupported_features_are_refused(kwargs, message):
    q = torch.randn(1, 4, 5, 8)
    kv = torch.randn(1, 2, 5, 8)
    with pytest.raises(PipelineError, match=message):
        varlen_attention_forward(torch.nn.Module(), q, kv, kv, None, **kwargs)


def test_kv_cache_is_refused():
    with pytest.raises(PipelineError, match="no KV cache"):
        varlen_attention_forward(torch.nn.Module(), torch.randn(1, 4, 1, 8), torch.randn(1, 2, 5, 8),
                                 torch.randn(1, 2, 5, 8), None)


@pytest.mark.parametrize("native_gqa", [True, False])
def test_kernel_call(monkeypatch, native_gqa):
    """The CUDA branch's call into varlen_attn, with a CPU stand-in for the kernel (FlashAttention's semantics):
    half-precision inputs, a tuple window (varlen_attn compares it with (-1, 0)), KV heads repeated where
    torch 2.11 has no enable_gqa."""
    from pipeline import attention

    def kernel(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
        assert isinstance(window_size, tuple) and q.dtype == k.dtype == v.dtype == torch.bfloat16
        assert enable_gqa == native_gqa and (k.shape[1] < q.shape[1]) == native_gqa
        assert max_q == max_k == int(cu_q.diff().max()) and cu_q is cu_k
        return attention.per_document_sdpa(q.float(), k.float(), v.float(), cu_q, scale, window_size).bfloat16()

    monkeypatch.setattr(attention, "_varlen_attn", lambda: kernel)
    monkeypatch.setattr(attention, "_native_gqa", lambda: native_gqa)
    q, k, v = torch.randn(9, 4, 8).bfloat16(), torch.randn(9, 2, 8).bfloat16(), torch.randn(9, 2, 8).bfloat16()
    cu = torch.tensor([0, 3, 9], dtype=torch.int32)
    out = attention.flash_varlen(q, k, v, cu, 6, 0.5, (2, 0))
    torch.testing.assert_close(out, attention.per_document_sdpa(q, k, v, cu, 0.5, (2, 0)), atol=1e-2, rtol=1e-2)
    with pytest.raises(PipelineError, match="without autocast"):
        attention.flash_varlen(q.float(), k.float(), v.float(), cu, 6, 0.5, (2, 0))
