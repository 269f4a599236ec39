"""k models of one architecture as one batched model: every kernel launch serves all k.

The members' parameters and buffers are stacked along a new first axis
(``torch.func.stack_module_state``) and one copy of the module, on the meta device, runs them all
through ``functional_call`` under ``vmap``. Each member keeps its own weights, BatchNorm running
statistics, gradients and (through an elementwise optimizer such as AdamW) optimizer state, so
training the stack is training k models side by side.

timm's fused attention (``scaled_dot_product_attention``) has no vmap rule on every backend; the
unfused path is the same math, so packing switches it off. Under vmap, CUDA's batch norm refuses a
bf16 input with float32 running statistics ("Expected running_mean to have type BFloat16", seen on
an H200 with bf16 autocast), which it accepts outside vmap; packed BatchNorm layers therefore take
their input in float32, the precision their statistics are kept in anyway.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


def unfuse_attention(model: nn.Module) -> None:
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False


def float_batchnorm(model: nn.Module) -> None:
    """Every BatchNorm layer casts a reduced-precision input to float32 before normalising."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.register_forward_pre_hook(_to_float32)


def _to_float32(module: nn.Module, args: tuple) -> tuple:
    x = args[0]
    return (x.float(), *args[1:]) if x.dtype in (torch.bfloat16, torch.float16) else args


class StackedModels:
    """``k`` models with one shape, called as one: ``logits[k, B, C] = stacked(x[k, B, ...])``."""

    def __init__(self, models: list[nn.Module], device: torch.device):
        for m in models:
            unfuse_attention(m)
        self.k = len(models)
        self.state_keys = list(models[0].state_dict())
        self.decay = {n: _decays(n, p) for n, p in models[0].named_parameters()}
        self.base = copy.deepcopy(models[0]).to("meta")
        float_batchnorm(self.base)
        self.params, self.buffers = stack_module_state([m.to(device) for m in models])

    def train(self, mode: bool = True) -> None:
        self.base.train(mode)

    def __call__(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """``x[k, B, ...]`` (one batch per member), or ``x[B, ...]`` for all with ``shared``."""
        # "different": each member draws its own drop-path masks, as it would alone
        run = vmap(self._one, in_dims=(0, 0, None if shared else 0), randomness="different")
        return run(self.params, self.buffers, x)

    def _one(self, params, buffers, x):
        return functional_call(self.base, (params, buffers), (x,))

    # ------------------------------------------------------------------ optimisation
    def param_groups(self, weight_decay: float) -> list[dict]:
        """The groups of :func:`bench.cell.module.param_groups`, member by member (same rule)."""
        trained = {n: p for n, p in self.params.items() if p.requires_grad}
        decay = [p for n, p in trained.items() if self.decay[n]]
        rest = [p for n, p in trained.items() if not self.decay[n]]
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ]

    @torch.no_grad()
    def clip_grad_norms_(self, max_norm: float) -> torch.Tensor:
        """``clip_grad_norm_`` for each member on its own gradients; returns the k norms."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        sq = torch.stack([g.reshape(self.k, -1).float().pow(2).sum(1) for g in grads]).sum(0)
        norms = sq.sqrt()
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(-1, *([1] * (g.ndim - 1))).to(g.dtype))
        return norms

    # ------------------------------------------------------------------ one member
    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        """Member ``i``'s ``state_dict`` (copies, on the device)."""
        both = {**self.params, **self.buffers}
        return {k: both[k][i].detach().clone() for k in self.state_keys}

    @torch.no_grad()
    def load_member(self, i: int, state: dict[str, torch.Tensor]) -> None:
        both = {**self.params, **self.buffers}
        for k in self.state_keys:
            both[k][i].copy_(state[k])

    # ------------------------------------------------------------------ optimizer state
    def member_optimizer(self, opt: torch.optim.Optimizer, i: int) -> dict:
        """Member ``i``'s share of ``opt``'s state, by parameter name: its slice of each
        parameter-shaped tensor (moments, momentum), the shared rest (AdamW's step count) as is,
        and the groups' hyperparameters (the scheduled lr among them)."""
        state = {}
        for name, p in self.params.items():
            if p in opt.state:
                own = {
                    k: v[i].detach().cpu().clone()
                    for k, v in opt.state[p].items()
                    if _stacked(v, p)
                }
                shared = {k: _copy(v) for k, v in opt.state[p].items() if not _stacked(v, p)}
                state[name] = {"sliced": own, "shared": shared}
        groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        return {"state": state, "param_groups": groups}

    def load_optimizer(self, opt: torch.optim.Optimizer, members: list[dict]) -> None:
        """``opt``'s state from the members' shares (:meth:`member_optimizer`, in member order);
        the shared values and hyperparameters are the first member's (equal at one step)."""
        names = {id(p): n for n, p in self.params.items()}
        order = [names[id(p)] for g in opt.param_groups for p in g["params"]]
        state = {}
        for idx, name in enumerate(order):
            shares = [m["state"][name] for m in members if name in m["state"]]
            if len(shares) == len(members):
                own = {
                    k: torch.stack([s["sliced"][k] for s in shares]) for k in shares[0]["sliced"]
                }
                state[idx] = {**shares[0]["shared"], **own}
        saved = members[0]["param_groups"]
        groups = [{**g, **s} for g, s in zip(opt.state_dict()["param_groups"], saved, strict=True)]
        opt.load_state_dict({"state": state, "param_groups": groups})


def _stacked(v, p: torch.Tensor) -> bool:
    return torch.is_tensor(v) and v.shape == p.shape


def _copy(v):
    return v.detach().cpu().clone() if torch.is_tensor(v) else v


def _decays(name: str, p: torch.Tensor) -> bool:
    return not (p.ndim <= 1 or name.endswith(("pos_embed", "cls_token", "reg_token")))
