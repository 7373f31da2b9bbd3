"""pipeline.fused_lora: a Gemma 3 with LoRA on its seven projections gives the same loss and the same gradient
on every LoRA weight and on the input embeddings, fused or through PEFT's own layers; with dropout, under
gradient checkpointing, in bf16, and falling back to PEFT wherever it is not plain LoRA. With float8 products
(pipeline/fp8.py) the loss and gradients stay near fp32's, and sizes _scaled_mm cannot take stay unquantised."""
import copy

import pytest
import torch

from pipeline.fused_lora import LoRAProduct, fuse

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora_model(dropout: float = 0.0, dtype=torch.float32, shape: dict | None = None, **lora):
    from peft import LoraConfig, get_peft_model
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(**{
        "vocab_size": 96, "hidden_size": 48, "intermediate_size": 80, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 12, "sliding_window": 8,
        "max_position_embeddings": 64, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2,
        "attn_implementation": "eager", **(shape or {})})
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).to(dtype)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=PROJECTIONS,
                                             **lora))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # PEFT starts B at zero, which would hide any error in A's gradient
            torch.nn.init.normal_(parameter, std=0.5)
    model.get_input_embeddings().weight.requires_grad_(True)  # checks the gradient reaching the input too
    return model


def lora_layer_type():
    from peft.tuners.lora.layer import Linear

    return (Linear,)


def loss_and_grads(model, seed: int = 1, checkpointing: bool = False):
    generator = torch.Generator().manual_seed(7)
    ids = torch.randint(3, 96, (2, 16), generator=generator)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {name: p.grad.float().clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach().float(), grads


def assert_same(expected, got, rtol, atol):
    (loss_a, grads_a), (loss_b, grads_b) = expected, got
    torch.testing.assert_close(loss_b, loss_a, rtol=rtol, atol=atol)
    assert grads_a.keys() == grads_b.keys()
    assert sum(n.endswith("lora_A.default.weight") for n in grads_a) == 2 * len(PROJECTIONS)
    assert sum(n.endswith("lora_B.default.weight") for n in grads_a) == 2 * len(PROJECTIONS)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=rtol, atol=atol, msg=name)


@pytest.fixture
def calls(monkeypatch):
    """The projections that went through the fused product: for each, whether its base product was float8."""
    counted = []
    apply = LoRAProduct.apply
    monkeypatch.setattr(LoRAProduct, "apply", lambda *args: counted.append(args[-1]) or apply(*args))
    return counted


@pytest.mark.parametrize("checkpointing,keep_weight", [(False, False), (True, False), (True, True)])
def test_same_loss_and_gradients_as_peft(checkpointing, keep_weight, calls):
    peft = lora_model()
    fused = copy.deepcopy(peft)
    assert fuse(fused, lora_layer_type(), keep_weight=keep_weight) == 2 * len(PROJECTIONS)
    expected = loss_and_grads(peft)
    assert not calls
    assert_same(expected, loss_and_grads(fused, checkpointing=checkpointing), rtol=1e-5, atol=1e-6)
    assert len(calls) == (2 if checkpointing else 1) * 2 * len(PROJECTIONS)  # recomputed under checkpointing


def test_dropout_draws_the_same_masks_as_peft_and_survives_recomputation():
    peft = lora_model(dropout=0.3)
    fused = copy.deepcopy(peft)
    fuse(fused, lora_layer_type())
    expected = loss_and_grads(peft)
    assert_same(expected, loss_and_grads(fused), rtol=1e-5, atol=1e-6)
    # checkpointing recomputes each layer's forward: the same masks must come back for the backward
    assert_same(expected, loss_and_grads(fused, checkpointing=True), rtol=1e-5, atol=1e-6)
    # and the masks are real: another seed gives another loss
    assert not torch.isclose(loss_and_grads(fused, seed=2)[0], expected[0])


def test_bf16_is_as_close_to_fp32_as_peft():
    """In bf16 both round; the fused product accumulates the adapter into the base product before its one
    rounding, so its gradients are no further from the fp32 ones than PEFT's."""
    truth = loss_and_grads(lora_model())
    peft = lora_model(dtype=torch.bfloat16)
    fused = copy.deepcopy(peft)
    fuse(fused, lora_layer_type())

    def error(result):
        loss, grads = result
        relative = [(grads[n] - truth[1][n]).norm() / truth[1][n].norm() for n in truth[1]]
        return abs(loss - truth[0]).item(), max(relative).item(), (sum(relative) / len(relative)).item()

    peft_error, fused_error = error(loss_and_grads(peft)), error(loss_and_grads(fused))
    assert fused_error[0] < 2e-3 and fused_error[1] < 0.1, fused_error
    assert fused_error[2] <= 1.2 * peft_error[2], (fused_error, peft_error)


def test_not_plain_lora_falls_back_to_peft(calls):
    peft = lora_model()
    fused = copy.deepcopy(peft)
    fuse(fused, lora_layer_type())
    ids = torch.randint(3, 96, (1, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        with peft.disable_adapter(), fused.disable_adapter():  # the base model alone
            torch.testing.assert_close(fused(input_ids=ids).logits, peft(input_ids=ids).logits)
            base = fused(input_ids=ids).logits
        assert not calls
        tuned = fused(input_ids=ids).logits
        assert len(calls) == 2 * len(PROJECTIONS)
        assert not torch.allclose(tuned, base)
        peft.merge_adapter()
        fused.merge_adapter()  # merged: the base layer already holds the adapter
        torch.testing.assert_close(fused(input_ids=ids).logits, tuned, rtol=1e-4, atol=1e-5)
        assert len(calls) == 2 * len(PROJECTIONS)
        torch.testing.assert_close(peft(input_ids=ids).logits, tuned, rtol=1e-4, atol=1e-5)


def test_lora_bias_and_dora_are_left_to_peft(calls):
    for lora in ({"lora_bias": True}, {"use_dora": True}):
        peft = lora_model(**lora)
        fused = copy.deepcopy(peft)
        fuse(fused, lora_layer_type())
        assert_same(loss_and_grads(peft), loss_and_grads(fused), rtol=1e-5, atol=1e-6)
    assert not calls


def test_fuse_twice_changes_nothing():
    model = lora_model()
    assert fuse(model, lora_layer_type()) == 14
    assert fuse(model, lora_layer_type()) == 0


def test_product_gradients_by_finite_differences():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 6, dtype=torch.float64)
    a = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, a, b: LoRAProduct.apply(x, a, b, lambda: weight, 0.5, 0.0, False), (x, a, b))


# every projection a multiple of 16 wide, as torch._scaled_mm needs (Gemma 3 27B: 5376, 4096, 2048, 21504)
ALIGNED = {"hidden_size": 64, "intermediate_size": 128, "head_dim": 16}


def relative_errors(result, truth):
    loss, grads = result
    return abs(loss - truth[0]).item() / truth[0].item(), {
        n: ((grads[n] - truth[1][n]).norm() / truth[1][n].norm()).item() for n in truth[1]}


@pytest.mark.parametrize("keep_weight", [False, True])
def test_float8_products_stay_close_to_fp32(keep_weight, calls):
    """e4m3 keeps 3 mantissa bits: each product is off by a few per cent of its scale, the loss and the LoRA
    gradients by a little. They must be off (the products really are float8) and only a little."""
    truth = loss_and_grads(lora_model(shape=ALIGNED))
    model = lora_model(shape=ALIGNED)
    assert fuse(model, lora_layer_type(), keep_weight=keep_weight, float8=True) == 2 * len(PROJECTIONS)
    loss_error, grad_errors = relative_errors(loss_and_grads(model, checkpointing=True), truth)
    assert len(calls) == 2 * 2 * len(PROJECTIONS) and all(calls)
    assert 0 < loss_error < 5e-3, loss_error
    assert 0 < max(grad_errors.values()) < 0.15, grad_errors  # bf16 in place of fp32: 0.04
    # fp32 products in the same fused path are exact: the error above is float8's own
    exact = lora_model(shape=ALIGNED)
    fuse(exact, lora_layer_type(), keep_weight=keep_weight)
    assert relative_errors(loss_and_grads(exact), truth)[0] < 1e-6


def test_float8_falls_back_where_a_size_is_not_a_multiple_of_16(calls):
    model = lora_model()  # key and value projections 24 wide
    fuse(model, lora_layer_type(), float8=True)
    loss_and_grads(model)
    narrow = [call for call in calls if not call]
    assert len(narrow) == 2 * 2  # k_proj and v_proj of both layers
    assert len(calls) - len(narrow) == 2 * (len(PROJECTIONS) - 2)
