# The demo-sized Focal backbone that both demo configs train from scratch (`make demo`): same
# focal attention as Focal-T (window 7, focal levels 2), embed_dims 32, depths (1, 1, 2, 1),
# 1.5 M parameters against Focal-T's 28 M, no ImageNet weights. A demo config lists this file in
# `_base_` and merges `_base_.focal_demo_backbone` into its Focal-T backbone.
focal_demo_backbone = dict(
    arch=None,
    embed_dims=32,
    depths=(1, 1, 2, 1),
    num_heads=(1, 2, 4, 8),
    # At 128 pixels the last stage's map (4x4 tokens) is one window with no neighbours to roll
    # in: like the official model built for this size, give it no rolled keys, hence no
    # neighbour table that would never get a gradient (and stall DDP).
    expand_sizes=(3, 3, 3, 0),
    drop_path_rate=0.1,
    init_cfg=None)
focal_demo_channels = [32, 64, 128, 256]  # embed_dims * 2**stage
