"""Architecture configs that kiclip adds to open_clip's built-in ones.

``kiclip-tiny`` is a few-hundred-kilobyte CLIP with the same structure as ViT-B/16
(QuickGELU, pre-LN blocks, CLS pooling, learnable positional embedding). Tests and the
CPU demo use it, because no pretrained weights can be fetched there.
"""

from copy import deepcopy

KICLIP_CONFIGS: dict[str, dict] = {
    "kiclip-tiny": {
        "embed_dim": 64,
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": 32,
            "layers": 4,
            "width": 96,
            "head_width": 24,  # 96 / 24 = 4 heads
            "patch_size": 8,
        },
        "text_cfg": {
            "context_length": 32,
            # The BPE tokenizer's vocabulary: token ids go up to 49407 whatever the width.
            "vocab_size": 49408,
            "width": 64,
            "heads": 2,
            "layers": 2,
        },
    },
}


def kiclip_config(name: str) -> dict | None:
    """A deep copy of one of kiclip's own configs, or None when the name is not ours."""
    cfg = KICLIP_CONFIGS.get(name)
    return deepcopy(cfg) if cfg is not None else None
