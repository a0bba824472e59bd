"""The tiny scorer weights the tests use: the product's own builders (sd_optim/scoring/tiny.py),
which `bench scorers` uses too."""

from sd_optim.scoring.tiny import (  # noqa: F401  (re-exported for the tests)
    TINY_CLIP_ARCH,
    TINY_EMBED_DIM,
    make_tiny_clip,
    make_tiny_head,
    random_image,
    register_tiny_clip_config,
    save_head,
    save_openai_archive,
    save_safetensors,
    save_state_dict,
    save_tiny_hf_clip,
    write_clip_tokenizer,
)
