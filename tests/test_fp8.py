"""pipeline.fp8: row-scaled e4m3 products against fp32, on row counts that need padding and on operands with a
loud token, a large input feature and a small output feature, the cases one scale per tensor gets wrong."""
import pytest
import torch

from pipeline import fp8


def operands(m=37, k=64, n=48, seed=0):
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(m, k, generator=generator)
    w = torch.randn(n, k, generator=generator)
    a[3] *= 3000  # one token far louder than the others
    w[:, 5] *= 50  # one input feature far larger
    w[7] /= 1000  # one output feature far smaller
    grad = torch.randn(m, n, generator=generator)
    return a, w, grad


def test_quantize_rows_is_within_e4m3_rounding_of_each_row():
    a, w, _ = operands()
    multiplier = torch.rand(64, generator=torch.Generator().manual_seed(2)) * 10
    for t, mul in ((a, None), (w, None), (a, multiplier)):
        q, scale = fp8.quantize_rows(t, mul)
        assert q.dtype == fp8.E4M3 and q.shape == t.shape and scale.shape == (t.shape[0], 1)
        target = t if mul is None else t * mul
        back = q.float() * scale
        # e4m3 keeps 3 mantissa bits (half a step: 1/16 of the value); below 2**-6 of the scale it has fixed
        # steps of 2**-9 of the scale, and the row's largest value sits at 448 = 2**8.8 times the scale
        bound = torch.maximum(target.abs() / 16, scale * 2 ** -10)
        assert ((back - target).abs() <= bound * 1.0001).all()
        assert (back - target).abs().max() > 0
        torch.testing.assert_close(back.abs().amax(dim=1), target.abs().amax(dim=1))  # the largest is exact


def test_forward_is_the_product_of_the_quantised_operands():
    """Unaligned row count (padded inside): equals the fp32 product of the operands as quantised, so every scale
    sits on its axis, and stays near the exact product, the small output feature included."""
    a, w, _ = operands()
    q, scale = fp8.for_forward(w)
    out = fp8.forward(a, q, scale)
    assert out.shape == (37, 48)
    a_q, a_scale = fp8.quantize_rows(a)
    torch.testing.assert_close(out, (a_q.float() * a_scale) @ (q.float() * scale).t(), rtol=1e-5, atol=1e-4)
    exact = a @ w.t()
    assert ((out - exact).norm(dim=1) / exact.norm(dim=1)).max() < 0.06
    small = (out[:, 7] - exact[:, 7]).norm() / exact[:, 7].norm()
    assert small < 0.08, small  # one scale for the whole weight would leave this feature a few levels


def test_input_grad_uses_the_forward_weight():
    """grad @ W through the forward's e4m3 weight: equal to grad (quantised with the weight's row scales on its
    columns) times that weight, and within e4m3's rounding of both operands of each term of the exact product."""
    a, w, grad = operands()
    q, scale = fp8.for_forward(w)
    back = fp8.input_grad(grad, *fp8.transposed(q, scale))
    assert back.shape == (37, 64)
    g_q, g_scale = fp8.quantize_rows(grad, scale.reshape(-1))
    torch.testing.assert_close(back, (g_q.float() * g_scale) @ q.float(), rtol=1e-5, atol=1e-4)
    # per element: 2 x 1/16 of each term's size; the subnormal floor of the small feature adds the constant
    assert ((back - grad @ w).abs() <= 0.13 * (grad.abs() @ w.abs()) + 1e-3).all()
    assert (back - grad @ w).abs().max() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_padding_changes_no_row(dtype):
    a, w, grad = operands(m=48)
    weight = fp8.for_forward(w.to(dtype))
    full = fp8.forward(a.to(dtype), *weight)
    assert full.dtype == dtype
    torch.testing.assert_close(fp8.forward(a[:37].to(dtype), *weight), full[:37], rtol=0, atol=0)
    full = fp8.input_grad(grad.to(dtype), *fp8.transposed(*weight))
    part = fp8.input_grad(grad[:37].to(dtype), *fp8.transposed(*weight))
    torch.testing.assert_close(part, full[:37], rtol=0, atol=0)


def test_supported_sizes():
    assert fp8.supported(5376, 21504, 4096, 2048)
    assert not fp8.supported(64, 24)
