"""Sin-cos position codes for from-scratch vision towers: the properties the init relies on."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vlm_r1.models import load_model
from vlm_r1.models.tiny.position_codes import POSITION_GAIN, init_position_embedding, sincos_grid


@settings(max_examples=25, deadline=None)
@given(side=st.integers(2, 32), quarter=st.integers(4, 48))
def test_codes_have_the_grid_shape_and_are_linearly_decodable_to_row_and_column(side, quarter):
    codes = sincos_grid(side, 4 * quarter).double().numpy()
    assert codes.shape == (side * side, 4 * quarter)
    rows, cols = np.divmod(np.arange(side * side), side)
    design = np.column_stack([codes, np.ones(side * side)])
    for target in (rows, cols):
        fit, *_ = np.linalg.lstsq(design, target.astype(float), rcond=None)
        # A linear read-out recovers the coordinate: what "features say where they are" means.
        assert np.abs(design @ fit - target).max() < 0.01  # of a cell


def test_row_channels_ignore_the_column_and_vice_versa():
    side, dim = 8, 32
    codes = sincos_grid(side, dim).reshape(side, side, dim)
    row_part, col_part = codes[..., : dim // 2], codes[..., dim // 2 :]
    assert torch.allclose(row_part, row_part[:, :1].expand_as(row_part))
    assert torch.allclose(col_part, col_part[:1].expand_as(col_part))
    assert not torch.allclose(row_part[0], row_part[1])


def test_neighbouring_cells_are_closer_than_distant_ones():
    codes = sincos_grid(16, 64).reshape(16, 16, 64)
    near = (codes[5, 5] - codes[5, 6]).norm()
    far = (codes[5, 5] - codes[5, 15]).norm()
    assert near < far / 2


def test_width_must_split_into_quarters():
    with pytest.raises(ValueError, match="multiple of 4"):
        sincos_grid(4, 30)


def test_embedding_is_scaled_against_the_patch_projection():
    embedding = torch.nn.Embedding(64, 16)
    patch = torch.randn(16, 3, 2, 4, 4)
    init_position_embedding(embedding, patch, gain=2.0)
    norms = embedding.weight.norm(dim=1)
    assert torch.isclose(norms.mean(), 2.0 * patch.norm(), rtol=1e-5)
    # A unit-variance patch's embedding has about the projection's Frobenius norm: the scale
    # really is "gain x a patch embedding", checked by Monte Carlo.
    pixels = torch.randn(4000, patch[0].numel())
    embedded_norm = (pixels @ patch.flatten(1).T).norm(dim=1).mean()
    assert torch.isclose(embedded_norm, patch.norm(), rtol=0.05)


def test_non_square_grid_is_refused():
    with pytest.raises(ValueError, match="square grid"):
        init_position_embedding(torch.nn.Embedding(60, 16), torch.randn(16, 3))


def test_tiny_qwen3_vl_is_built_with_visible_position_embeddings(tiny_path):
    _, model, _ = load_model(str(tiny_path("qwen3_vl")))
    visual = model.model.visual
    with torch.no_grad():
        ratio = visual.pos_embed.weight.norm(dim=1).mean() / visual.patch_embed.proj.weight.norm()
    assert ratio.item() == pytest.approx(POSITION_GAIN, rel=1e-4)
