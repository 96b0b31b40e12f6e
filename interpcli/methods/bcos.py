"""B-cos contributions W(x)ᵀx (Böhle et al. 2022, https://arxiv.org/abs/2205.10268).

The dynamic linear map of a B-cos model times its encoded input [x, 1-x], folded back to
the image's channels (contribution of channel c = that of x_c plus that of 1 - x_c), so the
map sums over pixels and channels to the target logit minus the fixed logit bias.
"""

from __future__ import annotations

from ..models.bcos import contributions
from ._common import batched
from ._registry import register_method


@register_method("bcos", description="B-cos contributions W(x)ᵀx (sum = logit - logit bias)", kind="model",
                 uses_gradients=True, bcos_only=True, paper="https://arxiv.org/abs/2205.10268")
def bcos(model, x, target, *, batch_size=None):
    def one(xb, tb):
        c = contributions(model, xb, tb).contributions
        half = c.shape[1] // 2
        return c[:, :half] + c[:, half:]

    return batched(one, x, target, batch_size)
