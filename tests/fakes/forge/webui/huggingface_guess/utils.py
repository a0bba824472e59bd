"""Fake of ``huggingface_guess/utils.py`` (84826248, ``:32-97``), reproduced behaviour:

- ``state_dict_prefix_replace(..., filter_keys=True)`` **pops** every matched key from the input
  and returns a new dict (``filter_keys=False``: renames in place, returns the input);
- ``transformers_convert`` renames OpenCLIP names to HF ``CLIPTextModel`` names for 32 layers
  (missing keys skipped) and splits ``attn.in_proj_{weight,bias}`` into three equal row slices,
  q/k/v, that are **views** of the input tensor;
- ``clip_text_transformers_convert`` moves ``text_projection.weight`` as is and stores
  ``text_projection`` **transposed** (``.transpose(0, 1).contiguous()``, a copy).
"""


def state_dict_prefix_replace(state_dict, replace_prefix, filter_keys=False):
    out = {} if filter_keys else state_dict
    for rp in replace_prefix:
        for old in [k for k in state_dict if k.startswith(rp)]:
            out[replace_prefix[rp] + old[len(rp):]] = state_dict.pop(old)
    return out


def transformers_convert(sd, prefix_from, prefix_to, number):
    keys_to_replace = {
        "{}positional_embedding": "{}embeddings.position_embedding.weight",
        "{}token_embedding.weight": "{}embeddings.token_embedding.weight",
        "{}ln_final.weight": "{}final_layer_norm.weight",
        "{}ln_final.bias": "{}final_layer_norm.bias",
    }
    for k, to in keys_to_replace.items():
        if k.format(prefix_from) in sd:
            sd[to.format(prefix_to)] = sd.pop(k.format(prefix_from))
    resblock_to_replace = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1",
                           "mlp.c_proj": "mlp.fc2", "attn.out_proj": "self_attn.out_proj"}
    for i in range(number):
        for x, to in resblock_to_replace.items():
            for y in ("weight", "bias"):
                k = f"{prefix_from}transformer.resblocks.{i}.{x}.{y}"
                if k in sd:
                    sd[f"{prefix_to}encoder.layers.{i}.{to}.{y}"] = sd.pop(k)
        for y in ("weight", "bias"):
            k = f"{prefix_from}transformer.resblocks.{i}.attn.in_proj_{y}"
            if k in sd:
                weights = sd.pop(k)
                n = weights.shape[0] // 3
                for j, name in enumerate(("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")):
                    sd[f"{prefix_to}encoder.layers.{i}.{name}.{y}"] = weights[n * j:n * (j + 1)]
    return sd


def clip_text_transformers_convert(sd, prefix_from, prefix_to):
    sd = transformers_convert(sd, prefix_from, f"{prefix_to}text_model.", 32)
    tp = f"{prefix_from}text_projection.weight"
    if tp in sd:
        sd[f"{prefix_to}text_projection.weight"] = sd.pop(tp)
    tp = f"{prefix_from}text_projection"
    if tp in sd:
        sd[f"{prefix_to}text_projection.weight"] = sd.pop(tp).transpose(0, 1).contiguous()
    return sd
