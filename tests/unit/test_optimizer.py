"""The engines' AdamW: torch's fused kernel wherever it applies, equal to the for-loop AdamW."""

from types import SimpleNamespace

import torch

from vlm_r1.config import OptimConfig
from vlm_r1.engine import Engine, fused_adamw_supported


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Linear(8, 3))


def _steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int = 5) -> None:
    for step in range(steps):
        torch.manual_seed(100 + step)
        ids = torch.randint(0, 50, (4, 6))
        loss = model(ids).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_fused_is_chosen_only_where_the_kernel_takes_every_parameter():
    floating = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2).bfloat16())]
    assert fused_adamw_supported(floating)
    assert not fused_adamw_supported([])
    assert not fused_adamw_supported(floating + [torch.ones(2, device="meta")])
    assert not fused_adamw_supported([torch.ones(2, dtype=torch.int64)])


def test_engine_optimizer_is_fused_and_steps_like_the_for_loop_adamw():
    optim = OptimConfig(learning_rate=1e-2, weight_decay=0.1, adam_beta1=0.8, adam_beta2=0.95)
    engine = SimpleNamespace(config=SimpleNamespace(optim=optim))
    fused_model, loop_model = _model(0), _model(0)
    loop_model[0].weight.requires_grad_(False)  # frozen parameters stay out of the optimizer
    fused_model[0].weight.requires_grad_(False)

    fused = Engine._make_optimizer(engine, fused_model)
    loop = torch.optim.AdamW(
        [p for p in loop_model.parameters() if p.requires_grad],
        lr=1e-2,
        weight_decay=0.1,
        betas=(0.8, 0.95),
        foreach=False,
    )
    assert fused.defaults["fused"] is True
    assert sum(len(g["params"]) for g in fused.param_groups) == 2
    _steps(fused_model, fused)
    _steps(loop_model, loop)
    for (name, a), b in zip(fused_model.named_parameters(), loop_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(fused_model[1].weight, _model(0)[1].weight)  # it did step
    assert torch.equal(fused_model[0].weight, _model(0)[0].weight)  # the frozen one did not
