"""Model-side methods on a timm VisionTransformer: PSS token selection, the DRLoc auxiliary loss and the
LocalViT* locality feed-forward.

``create_vit(name, ...)`` builds a timm ViT (``pretrained=False`` always, ``dynamic_img_size=True`` so
any input size works) and turns it into a ``VitdataViT``, a subclass that only overrides
``forward_features`` and ``forward``. Parameter names stay timm's, so a state dict loads into a plain
timm model of the same name (minus ``drloc_head.*`` when DRLoc is on).

PSS (Patch Sampling Schedule, docs/methods.md §2)
    After patch embedding, CLS, absolute position embedding and position dropout, keep the prefix
    tokens (CLS) plus ``round(keep_ratio * N) - num_prefix`` patch tokens, N counting CLS. 197 tokens
    at keep ratios .8/.6/.4/.2 give 158/118/79/39 tokens. ``magnitude`` keeps the top-k patch tokens
    by L1 norm over channels (deterministic), ``random`` a uniform subset per image. The blocks run
    on the kept tokens only; evaluation (``model.eval()``) always uses all tokens. Kept tokens stay
    in raster order. The paper's model is BEiT-style (per-layer relative position bias, mean
    pooling); that relative-position variant is *not* reproduced here: selection runs on the
    standard absolute-position ViT. Mean pooling is available with ``global_pool="avg"``.

DRLoc (dense relative localisation, docs/methods.md §4)
    An MLP ``2C -> 512 -> ReLU -> 512 -> ReLU -> 2`` on pairs of output patch tokens (CLS dropped).
    Defaults follow the released code (docs/methods.md §4): tokens taken *before* the final LayerNorm
    (``drloc_tokens="pre-norm"``; ``"post-norm"``: the tokens the classifier sees) and target ``abs``,
    ``|p - q|`` per axis in grid units, unnormalised (what the shipped scripts train with ``--use_abs``).
    The paper's variant: target ``normalized``, signed offsets ``(p - q) / k``, k the grid side.
    ``pairs`` positions p and q per image are drawn uniformly with replacement. L1 loss averaged over
    all pairs. With PSS on, pairs are drawn among the kept tokens and their true grid positions are
    used. ``drloc_lambda`` gives the weight over epochs (default ``released``: the shipped schedule,
    which never reaches 0).

Locality (LocalViT*, docs/methods.md §5a)
    Every block's MLP becomes an inverted-residual feed-forward: Linear C->4C (no bias), h-swish,
    depth-wise 3x3 conv on the token grid (no bias), h-swish, Linear 4C->C (no bias). The block's
    pre-norm LayerNorm, LayerScale and drop-path stay; the prefix tokens (CLS) skip the feed-forward.
    The grid is taken from the patch embedding's output, so any input size works. Locality needs
    the whole grid, so it cannot be combined with PSS (``ConfigError`` naming both switches).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
import timm
from timm.models.vision_transformer import Block, VisionTransformer

from vitdata.errors import ConfigError

PSS_MODES = ("magnitude", "random")
DRLOC_TARGETS = ("abs", "normalized")
DRLOC_TOKENS = ("pre-norm", "post-norm")
DRLOC_SCHEDULES = ("released", "ramp-decay", "constant")


# --------------------------------------------------------------------------------------------------
# PSS: token selection


def num_kept_tokens(num_tokens: int, keep_ratio: float, num_prefix: int = 1) -> int:
    """Tokens kept (prefix included) out of ``num_tokens`` (prefix included): ``round(r * N)``, at least
    one patch token, at most all of them."""
    kept = int(round(keep_ratio * num_tokens))
    return max(num_prefix + 1, min(num_tokens, kept))


def select_tokens(x: torch.Tensor, keep_ratio: float, mode: str = "magnitude", num_prefix: int = 1,
                  generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the prefix tokens and a subset of the patch tokens of ``x``.

    x: (B, num_prefix + P, C). Returns (tokens (B, num_prefix + k, C), patch indices (B, k) int64 in
    [0, P), ascending). ``magnitude``: top-k by L1 norm over C; ``random``: uniform per image.
    """
    B, N, C = x.shape
    P = N - num_prefix
    k = num_kept_tokens(N, keep_ratio, num_prefix) - num_prefix
    patches = x[:, num_prefix:]
    if mode == "magnitude":
        scores = patches.detach().abs().sum(dim=-1)
    elif mode == "random":
        scores = torch.rand(B, P, device=x.device, generator=generator)
    else:
        raise ConfigError(f"PSS mode must be one of {PSS_MODES}, got {mode!r}", fields=("pss_mode",))
    idx = scores.topk(k, dim=1, sorted=False).indices.sort(dim=1).values
    kept = patches.gather(1, idx.unsqueeze(-1).expand(B, k, C))
    return torch.cat([x[:, :num_prefix], kept], dim=1), idx


# --------------------------------------------------------------------------------------------------
# DRLoc: head, targets, loss, weight schedule


class DRLocHead(nn.Module):
    """Predicts the 2-D offset between two output tokens from their concatenation: (.., 2C) -> (.., 2)."""

    def __init__(self, dim: int, hidden: int = 512):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(inplace=True),
                                    nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                                    nn.Linear(hidden, 2))

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        return self.layers(pairs)


def drloc_targets(p: torch.Tensor, q: torch.Tensor, grid: tuple[int, int], target: str = "abs"
                  ) -> torch.Tensor:
    """Offsets between flat grid positions p and q (same shape, int64, raster order on an H x W grid).

    Returns float (..., 2) = (row, col): ``normalized``: ``(p - q) / (H, W)`` signed; ``abs``:
    ``|p - q|`` in grid units.
    """
    H, W = grid
    d = torch.stack([p // W - q // W, p % W - q % W], dim=-1).float()
    if target == "normalized":
        return d / torch.tensor([H, W], dtype=d.dtype, device=d.device)
    if target == "abs":
        return d.abs()
    raise ConfigError(f"DRLoc target must be one of {DRLOC_TARGETS}, got {target!r}", fields=("drloc_target",))


def drloc_loss(head: nn.Module, tokens: torch.Tensor, positions: torch.Tensor, grid: tuple[int, int],
               pairs: int = 64, target: str = "abs", generator: Optional[torch.Generator] = None
               ) -> torch.Tensor:
    """Mean L1 error of ``head`` on ``pairs`` random token pairs per image.

    tokens: (B, T, C) patch tokens (prefix removed); positions: (B, T) their flat grid positions.
    Both ends of a pair are drawn uniformly, independently, with replacement (p == q is allowed).
    """
    B, T, C = tokens.shape
    i = torch.randint(T, (B, pairs), device=tokens.device, generator=generator)
    j = torch.randint(T, (B, pairs), device=tokens.device, generator=generator)
    ei = tokens.gather(1, i.unsqueeze(-1).expand(B, pairs, C))
    ej = tokens.gather(1, j.unsqueeze(-1).expand(B, pairs, C))
    pred = head(torch.cat([ei, ej], dim=-1))
    t = drloc_targets(positions.gather(1, i), positions.gather(1, j), grid, target)
    return F.l1_loss(pred.float(), t)


def drloc_lambda(lam: float, epoch: float, epochs: int, warmup_epochs: Optional[float] = None,
                 schedule: str = "released") -> float:
    """DRLoc loss weight at ``epoch`` (0-based) of an ``epochs``-epoch run.

    ``released`` (default): the shipped code, scaled to the run: its loop stops after 100 epochs while its
    schedule ramps 0 -> lam over 20 epochs and then decays linearly towards 0 at the declared 300, so
    here: ramp over ``warmup_epochs`` (default 0.2 * epochs), decay towards 0 at 3 * epochs; the weight
    ends near 0.71 * lam and never reaches 0. ``ramp-decay``: the same ramp (default epochs / 15, i.e.
    20 of 300) and a decay that reaches 0 at ``epochs``. ``constant``: lam throughout."""
    if schedule == "constant":
        return lam
    if schedule not in DRLOC_SCHEDULES:
        raise ConfigError(f"unknown DRLoc schedule {schedule!r} {DRLOC_SCHEDULES}", fields=("drloc_schedule",))
    if warmup_epochs is None:
        warmup_epochs = 0.2 * epochs if schedule == "released" else epochs / 15
    zero_at = 3 * epochs if schedule == "released" else epochs
    if warmup_epochs > 0 and epoch < warmup_epochs:
        return lam * epoch / warmup_epochs
    return lam * max(0.0, (zero_at - epoch) / max(zero_at - warmup_epochs, 1e-9))


# --------------------------------------------------------------------------------------------------
# Locality: the LocalViT* feed-forward and block


class LocalityFeedForward(nn.Module):
    """Inverted-residual feed-forward on patch tokens: (B, H*W, C) -> (B, H*W, C).

    Takes timm's ``mlp_layer`` keyword arguments (``in_features``, ``hidden_features``; the rest are
    ignored: the layers carry no bias, the activation is h-swish, there is no dropout).
    """

    def __init__(self, in_features: int, hidden_features: Optional[int] = None, **_ignored):
        super().__init__()
        hidden = hidden_features or 4 * in_features
        self.fc1 = nn.Linear(in_features, hidden, bias=False)
        self.act1 = nn.Hardswish()
        self.conv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False)
        self.act2 = nn.Hardswish()
        self.fc2 = nn.Linear(hidden, in_features, bias=False)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        B, N, _ = x.shape
        H, W = grid
        x = self.act1(self.fc1(x))
        x = x.transpose(1, 2).reshape(B, -1, H, W)
        x = self.act2(self.conv(x))
        x = x.flatten(2).transpose(1, 2)
        return self.fc2(x)


class LocalityBlock(Block):
    """timm's pre-norm Block whose MLP is a ``LocalityFeedForward``; prefix tokens skip the feed-forward."""

    def __init__(self, *args, **kwargs):
        kwargs["mlp_layer"] = LocalityFeedForward
        super().__init__(*args, **kwargs)

    def forward(self, x: torch.Tensor, grid: Optional[tuple[int, int]] = None, **_) -> torch.Tensor:
        if grid is None:
            raise RuntimeError("LocalityBlock needs the token grid (H, W); run it through VitdataViT")
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        n_prefix = x.shape[1] - grid[0] * grid[1]
        prefix, patches = x[:, :n_prefix], x[:, n_prefix:]
        patches = patches + self.drop_path2(self.ls2(self.mlp(self.norm2(patches), grid)))
        return torch.cat([prefix, patches], dim=1)


# --------------------------------------------------------------------------------------------------
# The model


class VitdataViT(VisionTransformer):
    """A timm VisionTransformer with PSS token selection, optional locality blocks and a DRLoc head.

    Built by ``create_vit``, which creates the timm model and re-classes it, so the constructor is
    timm's. In training with DRLoc on, ``forward`` returns ``(logits, drloc_loss)`` (as timm's
    distilled DeiT returns a pair in training); otherwise logits (B, num_classes).
    """

    # Set by create_vit.
    keep_ratio: float = 1.0
    pss_mode: Optional[str] = None
    locality: bool = False
    drloc_pairs: int = 64
    drloc_target: str = "abs"
    drloc_tokens: str = "pre-norm"

    def set_keep_ratio(self, r: float) -> None:
        """Fraction of tokens (CLS counted) kept in training from the next forward on; 1.0 keeps all."""
        if not 0.0 < r <= 1.0:
            raise ConfigError(f"keep ratio must be in (0, 1], got {r}", fields=("keep_ratio",))
        if r < 1.0 and self.pss_mode is None:
            raise ConfigError("this model was built without PSS (pss_mode=None)", fields=("pss", "keep_ratio"))
        self.keep_ratio = float(r)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> tokens (B, num_prefix + T, C) after the final norm; T = all patches, or
        the kept ones in training under PSS. Sets ``self.last_grid`` (H/p, W/p) and
        ``self.last_positions`` (B, T) flat grid positions of the patch tokens (None when all kept)."""
        x = self.patch_embed(x)  # dynamic_img_size: (B, h, w, C)
        grid = tuple(x.shape[1:3]) if x.ndim == 4 else tuple(self.patch_embed.grid_size)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        positions = None
        if self.training and self.keep_ratio < 1.0:
            x, positions = select_tokens(x, self.keep_ratio, self.pss_mode, self.num_prefix_tokens)
        x = self.norm_pre(x)
        for blk in self.blocks:
            x = blk(x, grid) if self.locality else blk(x)
        self.last_grid, self.last_positions = grid, positions
        self.last_prenorm = x if getattr(self, "drloc_head", None) is not None else None
        return self.norm(x)

    def forward(self, x: torch.Tensor):
        feats = self.forward_features(x)
        logits = self.forward_head(feats)
        if not (self.training and getattr(self, "drloc_head", None) is not None):
            return logits
        tokens = (self.last_prenorm if self.drloc_tokens == "pre-norm" else feats)[:, self.num_prefix_tokens:]
        positions = self.last_positions
        if positions is None:
            positions = torch.arange(tokens.shape[1], device=x.device).expand(tokens.shape[0], -1)
        aux = drloc_loss(self.drloc_head, tokens, positions, self.last_grid, self.drloc_pairs, self.drloc_target)
        return logits, aux


def create_vit(name: str = "vit_tiny_patch16_224", *, num_classes: int, img_size: int = 224,
               locality: bool = False, pss: Optional[str] = None, drloc: bool = False,
               drloc_pairs: int = 64, drloc_target: str = "abs", drloc_tokens: str = "pre-norm",
               **timm_kwargs) -> VitdataViT:
    """Build timm model ``name`` (a plain ``VisionTransformer``: vit_*/deit_* without distillation) as a
    ``VitdataViT``.

    pss: None (off) or a token-selection mode, ``magnitude`` | ``random``; the keep ratio is set per
    step with ``set_keep_ratio``. locality: LocalViT* blocks. drloc: add the DRLoc head
    (``drloc_pairs`` pairs per image, ``drloc_target`` ``abs`` | ``normalized``, ``drloc_tokens``
    ``pre-norm`` | ``post-norm``). Other keyword
    arguments go to ``timm.create_model`` (depth, patch_size, embed_dim, drop_path_rate, global_pool...).
    """
    if locality and pss:
        raise ConfigError("--locality and --pss cannot be combined: the locality feed-forward convolves the "
                          "full token grid, which PSS token selection removes", fields=("locality", "pss"))
    if pss is not None and pss not in PSS_MODES:
        raise ConfigError(f"PSS mode must be one of {PSS_MODES}, got {pss!r}", fields=("pss_mode",))
    if drloc_target not in DRLOC_TARGETS:
        raise ConfigError(f"DRLoc target must be one of {DRLOC_TARGETS}, got {drloc_target!r}",
                          fields=("drloc_target",))
    if drloc_tokens not in DRLOC_TOKENS:
        raise ConfigError(f"DRLoc tokens must be one of {DRLOC_TOKENS}, got {drloc_tokens!r}", fields=("drloc_tokens",))
    timm_kwargs.setdefault("dynamic_img_size", True)
    if locality:
        timm_kwargs["block_fn"] = LocalityBlock
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, img_size=img_size, **timm_kwargs)
    if type(model) is not VisionTransformer:
        raise ConfigError(f"{name!r} is a {type(model).__name__}; vitdata's model switches need a plain timm "
                          "VisionTransformer (vit_* / deit_*_patch*)", fields=("model",))
    model.__class__ = VitdataViT
    model.pss_mode, model.keep_ratio, model.locality = pss, 1.0, locality
    model.drloc_pairs, model.drloc_target, model.drloc_tokens = int(drloc_pairs), drloc_target, drloc_tokens
    model.last_grid, model.last_positions, model.last_prenorm = None, None, None
    if drloc:
        model.drloc_head = DRLocHead(model.embed_dim)
    return model


def count_tokens(model: VitdataViT, img_size: int) -> int:
    """Tokens the blocks see in training for a square ``img_size`` input at the model's keep ratio."""
    p = model.patch_embed.patch_size[0]
    n = (img_size // p) ** 2 + model.num_prefix_tokens
    return n if model.keep_ratio >= 1.0 else num_kept_tokens(n, model.keep_ratio, model.num_prefix_tokens)


__all__ = ["create_vit", "VitdataViT", "select_tokens", "num_kept_tokens", "DRLocHead", "drloc_targets",
           "drloc_loss", "drloc_lambda", "LocalityFeedForward", "LocalityBlock", "count_tokens",
           "PSS_MODES", "DRLOC_TARGETS", "DRLOC_TOKENS", "DRLOC_SCHEDULES"]

