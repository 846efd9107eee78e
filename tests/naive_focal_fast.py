"""A straightforward Focal-fast block for tests, written as the official model computes it: per
window, the ``topk`` nearest map tokens and pooled tokens by torch.topk on the distances, the keys
gathered one window at a time and the MLP bias evaluated on that window's own offsets. It reads
the parameters of an mmfocal ``FocalFastTransformerBlock``, so the table-and-kernel path can be
checked against it (outputs and gradients)."""
import torch
import torch.nn.functional as F

from .naive_focal import partition


def nearest(centre, height, width, topk):
    """Row-major indices of the ``topk`` tokens of a height x width grid nearest to ``centre``."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing='ij')
    relative = torch.stack([centre[0] - rows.flatten(), centre[1] - cols.flatten()])  # long, as official
    distances = torch.sqrt(relative[0].float()**2 + relative[1].float()**2)
    return torch.topk(-distances[None], min(topk, height * width), dim=1).indices[0]


def centre_pad(x, rows, cols):
    """Zero-pad (B, H, W, C) to (rows, cols), extra row/column at the end (H <= rows, W <= cols)."""
    H, W = x.shape[1:3]
    top, left = (rows - H) // 2, (cols - W) // 2
    return F.pad(x, (0, 0, left, cols - W - left, top, rows - H - top))


def naive_fast_block(block, x):
    """Output of ``block`` (an mmfocal FocalFastTransformerBlock, fc or no pooling) on x (B, H, W, C)."""
    attn = block.attn
    B, H, W, C = x.shape
    w, heads, topk = attn.window_size, attn.num_heads, attn.topk
    d = C // heads
    shortcut = x
    x = F.layer_norm(x, (C, ), block.norm1.weight, block.norm1.bias)
    nwh, nww = -(-H // w), -(-W // w)
    qkv = F.linear(F.pad(x, (0, 0, 0, nww * w - W, 0, nwh * w - H)), attn.qkv.weight, attn.qkv.bias)
    q, k, v = qkv.split(C, -1)
    k_map, v_map = k[:, :H, :W].reshape(B, H * W, C), v[:, :H, :W].reshape(B, H * W, C)
    q_windows = partition(q, w).view(B, nwh * nww, w * w, heads, d).transpose(2, 3) * attn.scale
    use_pooled = len(block.pool_layers) > 0
    if use_pooled:  # fc pooling of each window of the centre-padded map
        fc = block.pool_layers[0]
        windows = partition(centre_pad(x, nwh * w, nww * w), w)  # (B * nW, w*w, C)
        pooled = (windows.transpose(1, 2) @ fc.weight.t()).squeeze(-1) + fc.bias
        pooled_kv = F.linear(pooled.view(B, nwh * nww, C), attn.qkv.weight[C:], attn.qkv.bias[C:])
    q_rows, q_cols = torch.meshgrid(torch.arange(w), torch.arange(w), indexing='ij')
    out = torch.zeros(B, nwh * nww, heads, w * w, d, dtype=x.dtype)
    for n in range(nwh * nww):
        i, j = divmod(n, nww)
        query_pos = torch.stack([q_rows.flatten() + i * w, q_cols.flatten() + j * w], -1)  # (w*w, 2)
        idx = nearest((i * w + w // 2, j * w + w // 2), H, W, topk)
        key_pos = torch.stack([idx // W, idx % W], -1)
        keys, values = [k_map[:, idx]], [v_map[:, idx]]
        biases = [attn.coord2rpb_all[0]((query_pos[:, None] - key_pos[None]).to(x.dtype))]
        if use_pooled:
            idx = nearest((i, j), nwh, nww, topk)
            key_pos = torch.stack([idx // nww * w + w // 2, idx % nww * w + w // 2], -1)
            keys.append(pooled_kv[:, idx, :C])
            values.append(pooled_kv[:, idx, C:])
            biases.append(attn.coord2rpb_all[1]((query_pos[:, None] - key_pos[None]).to(x.dtype)))
        keys = torch.cat(keys, 1).view(B, -1, heads, d).transpose(1, 2)  # (B, heads, K, d)
        values = torch.cat(values, 1).view(B, -1, heads, d).transpose(1, 2)
        bias = torch.cat(biases, 1).permute(2, 0, 1)  # (heads, w*w, K)
        logits = q_windows[:, n] @ keys.transpose(-2, -1) + bias
        out[:, n] = logits.softmax(-1) @ values
    out = out.transpose(2, 3).reshape(B, nwh, nww, w, w, C).permute(0, 1, 3, 2, 4, 5)
    out = F.linear(out.reshape(B, nwh * w, nww * w, C), attn.proj.weight, attn.proj.bias)[:, :H, :W]
    x = shortcut + out
    hidden = F.gelu(F.linear(F.layer_norm(x, (C, ), block.norm2.weight, block.norm2.bias),
                             block.mlp.fc1.weight, block.mlp.fc1.bias))
    return x + F.linear(hidden, block.mlp.fc2.weight, block.mlp.fc2.bias)
