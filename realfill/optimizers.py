"""``train.optimizer``: the optimizer a fine-tuning run steps its adapter's parameters with.

- ``adamw``: ``torch.optim.AdamW`` (the paper's; fused on CPU and CUDA).
- ``prodigy``: Prodigy (Mishchenko & Defazio 2023, the ``prodigyopt`` package), which estimates the step
  size itself; its learning rate is a multiplier of that estimate, 1.0 as its authors advise (switching to
  it on the command line sets ``train.lr_unet`` and ``train.lr_text_encoder`` to 1.0 unless they are set in
  the same command: :func:`realfill.config.resolve_optimizer_rates`).
- ``adamw-8bit``: torchao's ``AdamW8bit`` (block-wise 8-bit moments: about a quarter of AdamW's state);
  runs on CPU and CUDA (it compiles its step with ``torch.compile`` on first use).

An optimizer whose package is missing is one line naming the extra to install (exit 2).
"""

from __future__ import annotations

import importlib.util

import torch

from realfill.errors import UserError

#: the optimizer names ``train.optimizer`` takes, with the module each needs and the extra that installs it
OPTIMIZERS: dict[str, tuple[str | None, str | None]] = {
    "adamw": (None, None),
    "prodigy": ("prodigyopt", "prodigy"),
    "adamw-8bit": ("torchao", "adamw8bit"),
}


def check_optimizer_installed(name: str) -> None:
    """One line naming the extra when ``name``'s package is not installed."""
    module, extra = OPTIMIZERS[name]
    if module is None:
        return
    try:
        found = importlib.util.find_spec(module) is not None
    except ValueError:  # a module set to None in sys.modules: not importable
        found = False
    if not found:
        raise UserError(f"train.optimizer '{name}' needs the {module} package, which is not installed: "
                        f"pip install 'realfill[{extra}]'")


def make_optimizer(groups: list[dict], train) -> torch.optim.Optimizer:
    """``train.optimizer`` over the param ``groups`` (each with its ``lr``), with ``train``'s betas, epsilon
    and weight decay."""
    name = train.optimizer
    check_optimizer_installed(name)
    betas, eps, decay = (train.adam_beta1, train.adam_beta2), train.adam_epsilon, train.weight_decay
    if name == "prodigy":
        from prodigyopt import Prodigy  # an optional extra

        # decoupled weight decay as AdamW's; bias correction off (the authors' default); safeguard_warmup
        # off, as diffusers' scripts leave it unless asked
        return Prodigy(groups, betas=betas, eps=eps, weight_decay=decay, decouple=True)
    if name == "adamw-8bit":
        from torchao.optim import AdamW8bit  # an optional extra

        return AdamW8bit(groups, betas=betas, eps=eps, weight_decay=decay)
    params = [p for g in groups for p in g["params"]]
    # one fused kernel for every parameter (CPU and CUDA) instead of a Python loop over them
    fused = all(p.device.type in ("cpu", "cuda") for p in params) or None
    return torch.optim.AdamW(groups, betas=betas, eps=eps, weight_decay=decay, fused=fused)
