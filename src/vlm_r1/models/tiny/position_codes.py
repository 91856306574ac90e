"""Fixed 2-D sin-cos position codes for initialising a from-scratch vision tower's learned
position embeddings (the MAE / ViT recipe, Sec. "position embeddings" of He et al. 2021).

Why the tiny checkpoints need this: a VLM can only answer "where" if its image features say
where they come from. Qwen3-VL's vision tower adds a learned position embedding to each patch
embedding; transformers initialises it from N(0, 0.02), about 1/70 of the patch embeddings'
norm in the demo-size model. Trained from scratch on CPU, such a model learns how *big* an
object is (that is content) but not where it is: on the shapes ``locate`` task, after 400 SFT
steps its predicted box centres correlated 0.07 / -0.07 (x / y) with the truth, Acc@0.5 0.11;
with these codes 0.98 / 0.95, Acc@0.5 0.75 (``scripts/locate_probe.py``). A pretrained
checkpoint has learned its own embeddings, so this only touches models we build
(``models/tiny/qwen.py``).
"""

from __future__ import annotations

import math

import torch

#: Position codes' row norm as a multiple of a patch embedding's expected norm.
POSITION_GAIN = 5.0


def sincos_grid(side: int, dim: int, longest_wavelength: float = 100.0) -> torch.Tensor:
    """``[side * side, dim]`` codes for a ``side x side`` grid in row-major order.

    A quarter of the channels each holds sin and cos of the row and of the column, at
    wavelengths from half the grid to ``longest_wavelength`` times that (geometric). The long
    wavelengths are near-linear ramps across the grid, which a linear read-out turns straight
    into a coordinate; the short ones separate neighbouring cells.
    """
    if dim % 4:
        raise ValueError(f"position code width must be a multiple of 4, got {dim}")
    quarter = dim // 4
    wavelengths = (side / 2) * longest_wavelength ** (torch.arange(quarter) / quarter)
    rows, cols = torch.meshgrid(
        torch.arange(side, dtype=torch.float64),
        torch.arange(side, dtype=torch.float64),
        indexing="ij",
    )
    parts = []
    for coordinate in (rows.flatten(), cols.flatten()):
        angle = coordinate[:, None] * (2 * math.pi / wavelengths[None, :])
        parts += [angle.sin(), angle.cos()]
    return torch.cat(parts, dim=1).float()


@torch.no_grad()
def init_position_embedding(
    embedding: torch.nn.Embedding, patch_weight: torch.Tensor, gain: float = POSITION_GAIN
) -> None:
    """Overwrite a square grid of learned position embeddings with scaled sin-cos codes.

    The scale is set against ``patch_weight`` (the patch-embedding projection): for a patch
    of unit-variance pixels, a patch embedding's expected norm is the projection's Frobenius
    norm, and each position code gets ``gain`` times that norm.
    """
    count, dim = embedding.weight.shape
    side = math.isqrt(count)
    if side * side != count:
        raise ValueError(f"position embeddings must form a square grid, got {count}")
    codes = sincos_grid(side, dim)
    target = gain * patch_weight.detach().float().norm()
    codes = codes / codes.norm(dim=1).mean() * target
    embedding.weight.copy_(codes.to(embedding.weight.dtype))
