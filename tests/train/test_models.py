"""vitdata.train.models: PSS token selection, DRLoc head/targets/loss, LocalViT* locality blocks (CPU, tiny ViTs)."""
import pytest
import torch

from vitdata.errors import ConfigError
from vitdata.train.models import (DRLocHead, create_vit, drloc_lambda, drloc_loss, drloc_targets, num_kept_tokens, select_tokens)

TINY = dict(depth=2)


def tiny(**kw):
    torch.manual_seed(0)
    args = dict(num_classes=10, img_size=kw.pop("img_size", 64), **TINY)
    args.update(kw)
    return create_vit("vit_tiny_patch16_224", **args)


@pytest.mark.parametrize("ratio,tokens", [(1.0, 197), (0.8, 158), (0.6, 118), (0.4, 79), (0.2, 39)])
def test_pss_keeps_round_ratio_times_197_tokens_cls_included(ratio, tokens):
    assert num_kept_tokens(197, ratio) == tokens
    x = torch.randn(2, 197, 8)
    kept, idx = select_tokens(x, ratio, "magnitude")
    assert kept.shape == (2, tokens, 8)
    assert torch.equal(kept[:, 0], x[:, 0])  # CLS always first and kept
    assert idx.shape == (2, tokens - 1)


def test_pss_model_blocks_see_the_kept_token_count_in_training_and_all_tokens_in_eval():
    model = tiny(img_size=224, pss="magnitude")
    seen = []
    model.blocks[0].register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    model.set_keep_ratio(0.4)
    model.train()
    model(torch.randn(2, 3, 224, 224))
    model.eval()
    with torch.no_grad():
        model(torch.randn(2, 3, 224, 224))
    assert seen == [79, 197]


def test_magnitude_mode_keeps_the_highest_l1_tokens_in_raster_order():
    x = torch.zeros(1, 11, 4)
    x[0, 0] = -100.0  # CLS, huge norm, must not count as a patch
    l1 = torch.tensor([5.0, 1, 9, 3, 7, 2, 8, 0.5, 6, 4])
    x[0, 1:, 0] = l1 * torch.tensor([1, -1, 1, -1, 1, -1, 1, -1, 1, -1.0])  # signs must not matter
    kept, idx = select_tokens(x, 0.55, "magnitude")  # round(0.55*11)=6 -> CLS + 5 patches
    assert idx[0].tolist() == [0, 2, 4, 6, 8]  # L1 9, 8, 7, 6, 5
    assert torch.equal(kept[0, 1:], x[0, 1 + idx[0]])
    again, idx2 = select_tokens(x, 0.55, "magnitude")
    assert torch.equal(idx, idx2)


def test_random_mode_picks_a_different_subset_per_image():
    torch.manual_seed(0)
    x = torch.ones(8, 65, 4)
    _, idx = select_tokens(x, 0.4, "random")  # round(0.4 * 65) = 26 -> CLS + 25 patches
    assert idx.shape == (8, 25)
    assert len({tuple(r.tolist()) for r in idx}) > 1
    assert all(len(set(r.tolist())) == 25 for r in idx)


def test_keep_ratio_below_one_needs_a_pss_model():
    model = tiny()
    with pytest.raises(ConfigError):
        model.set_keep_ratio(0.5)


def test_drloc_targets_on_a_hand_case():
    # 4x4 grid: p = (row 3, col 1) = 13, q = (row 0, col 2) = 2
    p, q = torch.tensor([13]), torch.tensor([2])
    assert drloc_targets(p, q, (4, 4), "normalized").tolist() == [[0.75, -0.25]]
    assert drloc_targets(p, q, (4, 4), "abs").tolist() == [[3.0, 1.0]]
    assert drloc_targets(p, p, (4, 4)).tolist() == [[0.0, 0.0]]
    # non-square 2x5: p = (1, 4) = 9, q = (0, 0) = 0
    assert drloc_targets(torch.tensor([9]), torch.tensor([0]), (2, 5), "normalized")[0].tolist() == \
        pytest.approx([0.5, 0.8])
    assert drloc_targets(torch.tensor([9]), torch.tensor([0]), (2, 5))[0].tolist() == [1.0, 4.0]  # default abs


def test_drloc_head_learns_offsets_on_a_toy_fit():
    torch.manual_seed(0)
    grid, C = (4, 4), 16
    emb = torch.randn(16, C)  # a fixed embedding per position: offsets are learnable from pairs
    tokens = emb.expand(8, 16, C)
    positions = torch.arange(16).expand(8, 16)
    head = DRLocHead(C, hidden=64)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = drloc_loss(head, tokens, positions, grid, pairs=64)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.3 * sum(losses[:10]) / 10


def test_drloc_model_returns_logits_and_aux_loss_in_training_only():
    model = tiny(drloc=True)
    model.train()
    logits, aux = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 10) and aux.ndim == 0 and aux.item() > 0
    (logits.sum() + aux).backward()
    assert model.drloc_head.layers[0].weight.grad is not None
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_drloc_with_pss_uses_the_kept_tokens_true_positions():
    model = tiny(pss="magnitude", drloc=True)
    model.set_keep_ratio(0.6)
    model.train()
    _, aux = model(torch.randn(2, 3, 64, 64))  # round(0.6 * 17) = 10 -> CLS + 9 patches
    assert model.last_positions.shape == (2, 9) and torch.isfinite(aux)
    assert model.last_positions.max() < 16


def test_drloc_lambda_ramps_then_decays():
    assert drloc_lambda(0.5, 0, 10, 2, "ramp-decay") == 0.0
    assert drloc_lambda(0.5, 1, 10, 2, "ramp-decay") == pytest.approx(0.25)
    assert drloc_lambda(0.5, 2, 10, 2, "ramp-decay") == pytest.approx(0.5)
    assert drloc_lambda(0.5, 6, 10, 2, "ramp-decay") == pytest.approx(0.25)
    assert drloc_lambda(0.5, 10, 10, 2, "ramp-decay") == 0.0
    assert drloc_lambda(0.5, 7, 10, 2, "constant") == 0.5


def test_drloc_defaults_follow_the_released_code():
    # docs/methods.md §4. The shipped loop stops at epoch 100 of a schedule declared for 300 with 20 warm-up
    # epochs: lambda is 0.1 for ViT-like models (0.5 is Swin's), ends at 200 / 280 = 0.714 lambda, never 0.
    assert [drloc_lambda(0.1, e, 100) for e in (0, 10, 20)] == pytest.approx([0.0, 0.05, 0.1])
    assert drloc_lambda(0.1, 100, 100) == pytest.approx(0.1 * 200 / 280)
    assert min(drloc_lambda(0.1, e, 100) for e in range(20, 100)) > 0.07
    from vitdata.train.config import parse_config
    cfg = parse_config(["--recipe", "drloc"])
    assert (cfg.drloc, cfg.drloc_target, cfg.drloc_tokens, cfg.drloc_schedule) == (0.1, "abs", "pre-norm", "released")
    # unnormalised |p - q| targets on the tokens before the final LayerNorm
    model = tiny(drloc=True)
    assert (model.drloc_target, model.drloc_tokens) == ("abs", "pre-norm")
    model.train()
    seen = {}
    model.drloc_head.register_forward_hook(lambda m, i, o: seen.update(pairs=i[0]))
    torch.manual_seed(1)
    model(torch.randn(2, 3, 64, 64))
    pre = model.last_prenorm[:, 1:]
    assert any(torch.equal(seen["pairs"][0, k, :192], pre[0, j]) for k in range(4) for j in range(16))
    post = model.norm(model.last_prenorm)[:, 1:]
    assert not any(torch.allclose(seen["pairs"][0, 0, :192], post[0, j]) for j in range(16))
    paper = tiny(drloc=True, drloc_target="normalized", drloc_tokens="post-norm")  # the paper's variant
    paper.train()
    assert torch.isfinite(paper(torch.randn(2, 3, 64, 64))[1])


def test_locality_ffn_keeps_shape_and_leaves_cls_alone():
    model = tiny(locality=True)
    blk = model.blocks[0]
    assert type(blk.mlp).__name__ == "LocalityFeedForward"
    assert blk.mlp.fc1.bias is None and blk.mlp.fc2.bias is None and blk.mlp.conv.groups == 4 * 192
    x = torch.randn(2, 17, 192)
    attn_only = x + blk.attn(blk.norm1(x))
    out = blk(x, (4, 4))
    assert out.shape == x.shape
    assert torch.allclose(out[:, 0], attn_only[:, 0], atol=1e-6)  # CLS: attention residual only
    assert not torch.allclose(out[:, 1:], attn_only[:, 1:])


def test_locality_conv_mixes_neighbouring_tokens_only():
    model = tiny(locality=True)
    ffn = model.blocks[0].mlp
    x = torch.zeros(1, 16, 192)
    base = ffn(x, (4, 4))
    x[0, 0] = 1.0  # token at (0, 0)
    delta = (ffn(x, (4, 4)) - base).abs().sum(-1)[0].view(4, 4)
    assert (delta[:2, :2] > 0).all() and delta[2:].sum() == 0 and delta[:, 2:].sum() == 0


def test_locality_and_pss_cannot_be_combined():
    with pytest.raises(ConfigError) as e:
        tiny(locality=True, pss="magnitude")
    assert set(e.value.fields) == {"locality", "pss"} and "--locality" in str(e.value) and "--pss" in str(e.value)


@pytest.mark.parametrize("variant", [dict(), dict(locality=True), dict(pss="random", drloc=True),
                                     dict(global_pool="avg", pss="magnitude")])
def test_forward_backward_at_two_sizes_with_dynamic_img_size(variant):
    model = tiny(img_size=64, patch_size=8, **variant)
    if variant.get("pss"):
        model.set_keep_ratio(0.6)
    model.train()
    for size in (32, 64):
        out = model(torch.randn(2, 3, size, size))
        logits, aux = out if isinstance(out, tuple) else (out, 0.0)
        assert logits.shape == (2, 10)
        (logits.logsumexp(-1).mean() + aux).backward()
        assert model.pos_embed.grad is not None and torch.isfinite(model.pos_embed.grad).all()
        model.zero_grad()
        assert model.last_grid == (size // 8, size // 8)


def test_state_dict_keys_match_plain_timm_model():
    import timm
    plain = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=64, depth=2,
                              dynamic_img_size=True)
    model = tiny(pss="magnitude")
    assert model.state_dict().keys() == plain.state_dict().keys()
