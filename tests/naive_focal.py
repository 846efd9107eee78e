"""A straightforward focal-attention block for tests: rolls, partitions and unfolds, written for
clarity, not speed. It reads the parameters of an mmfocal ``FocalTransformerBlock`` and computes
the official model's function step by step, so the optimised gather path can be checked against
it (outputs and gradients)."""

import torch
import torch.nn.functional as F


def partition(x, w):
    """(B, H, W, C) -> (B * nW, w * w, C), windows row-major."""
    B, H, W, C = x.shape
    x = x.view(B, H // w, w, W // w, w, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, C)


def rel_index(q, k):
    qr, qc = torch.meshgrid(torch.arange(q), torch.arange(q), indexing='ij')
    kr, kc = torch.meshgrid(torch.arange(k), torch.arange(k), indexing='ij')
    dr = qr.reshape(-1, 1) - kr.reshape(1, -1) + k - 1
    dc = qc.reshape(-1, 1) - kc.reshape(1, -1) + k - 1
    return dr * (q + k - 1) + dc


def naive_block(block, x):
    """Output of ``block`` (an mmfocal FocalTransformerBlock) on x (B, H, W, C)."""
    attn_mod = block.attn
    B, H, W, C = x.shape
    w, e, heads = attn_mod.window_size, attn_mod.expand_size, attn_mod.num_heads
    d = C // heads
    shortcut = x
    x = F.layer_norm(x, (C, ), block.norm1.weight, block.norm1.bias)
    x = F.pad(x, (0, 0, 0, (-W) % w, 0, (-H) % w))
    Hp, Wp = x.shape[1:3]
    nwh, nww = Hp // w, Wp // w
    qkv = F.linear(x, attn_mod.qkv.weight, attn_mod.qkv.bias)
    q, k, v = qkv.split(C, -1)

    def heads_of(t):  # (N, L, C) -> (N, heads, L, d)
        return t.view(t.shape[0], t.shape[1], heads, d).transpose(1, 2)

    keys, values = [heads_of(partition(k, w))], [heads_of(partition(v, w))]
    use_rolled = e > 0 and min(H, W) > w
    if use_rolled:
        for shift, keep in (((-e, -e), (slice(None, -e), slice(None, -e))),
                            ((-e, e), (slice(None, -e), slice(e, None))),
                            ((e, -e), (slice(e, None), slice(None, -e))),
                            ((e, e), (slice(e, None), slice(e, None)))):
            outside = torch.ones(w, w, dtype=torch.bool)
            outside[keep] = False
            idx = outside.flatten().nonzero().flatten()
            keys.append(heads_of(partition(torch.roll(k, shift, (1, 2)), w))[:, :, idx])
            values.append(heads_of(partition(torch.roll(v, shift, (1, 2)), w))[:, :, idx])
    n_local = sum(t.shape[2] for t in keys)

    pooled_masks = []
    for level in range(attn_mod.num_pooled_levels):
        pooled = block.pool(x, level)  # (B, h, w, C): pooling itself is a tested plain op
        ph, pw = pooled.shape[1:3]
        kv = F.linear(pooled, attn_mod.qkv.weight, attn_mod.qkv.bias)[..., C:]
        kernel = 2 * (attn_mod.focal_window // 2) + 2**level + (2**level - 1)
        stride = 2**level
        unfold = torch.nn.Unfold(kernel, padding=kernel // 2, stride=stride)
        valid = torch.zeros(kernel, kernel, dtype=torch.bool)
        valid[stride - 1:, stride - 1:] = True
        valid = valid.flatten().nonzero().flatten()
        ones = unfold(torch.ones(1, 1, ph, pw)).view(kernel * kernel, -1).t()[:, valid]  # (nW, K)
        pooled_masks.append((ones == 0).float() * -100.0)
        for part, store in ((kv[..., :C], keys), (kv[..., C:], values)):
            cols = unfold(part.permute(0, 3, 1, 2)).view(B, C, kernel * kernel, -1)
            cols = cols.permute(0, 3, 2, 1).reshape(-1, kernel * kernel, C)[:, valid]
            store.append(heads_of(cols))
    k_all, v_all = torch.cat(keys, 2), torch.cat(values, 2)

    q = heads_of(partition(q, w)) * attn_mod.scale
    logits = q @ k_all.transpose(-2, -1)
    table_bias = attn_mod.relative_position_bias_table[rel_index(w, w).flatten()].view(w * w, w * w, heads)
    bias = [table_bias.permute(2, 0, 1)]
    if use_rolled:
        bias.append(attn_mod.relative_position_bias_table_to_neighbors[0])
    masks = [torch.zeros(nwh * nww, n_local)]
    for level, table in enumerate(attn_mod.relative_position_bias_table_to_windows):
        side = attn_mod.focal_window + 2**level - 1
        bias.append(table[:, rel_index(w, side).flatten()].view(heads, w * w, side * side))
        masks.append(pooled_masks[level])
    bias = torch.cat(bias, -1)
    mask = torch.cat(masks, -1).repeat(B, 1)  # (B * nW, keys)
    logits = logits + bias.unsqueeze(0) + mask[:, None, None, :]
    out = logits.softmax(-1) @ v_all  # (B * nW, heads, w*w, d)
    out = out.transpose(1, 2).reshape(B, nwh, nww, w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)
    out = F.linear(out, attn_mod.proj.weight, attn_mod.proj.bias)[:, :H, :W]
    x = shortcut + out
    hidden = F.gelu(F.linear(F.layer_norm(x, (C, ), block.norm2.weight, block.norm2.bias),
                             block.mlp.fc1.weight, block.mlp.fc1.bias))
    return x + F.linear(hidden, block.mlp.fc2.weight, block.mlp.fc2.bias)
