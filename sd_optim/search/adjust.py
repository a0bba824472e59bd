"""``layer_adjust``: SuperMerger's *Adjust* as an sd-mecha merge method.

Eight values move a model's look through the six tensors at the two ends of its UNet: the
input convolution (``input_blocks.0.0``) and the output norm and convolution (``out.0``,
``out.2``). Detail scales their weights down and the biases up; contrast, brightness and the
three colour axes shift the output convolution's bias, one entry per latent channel, along each
architecture's latent colour directions. The scales are SuperMerger's (its ``fineman`` and
``colorcalc``, scripts/mergers/mergers.py in hako-mikan/sd-webui-supermerger), so the values a
SuperMerger user knows mean the same here: 0 changes nothing; a few units (±1 to ±5) are
visible; every other key is passed through.

Registered with sd-mecha when this module is imported (``sd_optim.search.methods`` imports it),
so a recipe that uses it — a trial's ``best.mecha`` — merges with plain sd-mecha after
``import sd_optim.search.adjust``.
"""

# no ``from __future__ import annotations``: sd-mecha reads the parameter annotations as objects
import torch
from sd_mecha import merge_method
from sd_mecha.extensions.merge_methods import Parameter, Return, StateDict

METHOD = "layer_adjust"
SPAN = (-4.0, 4.0)  # what each value is tuned over unless guide.bounds says otherwise: a visible change
VALUES = ("detail_in", "detail_out", "detail_out2", "contrast", "brightness", "cyan_red", "magenta_green",
          "yellow_blue")  # SuperMerger's eight, in its order

_UNET = "model.diffusion_model."
IN_WEIGHT, IN_BIAS = _UNET + "input_blocks.0.0.weight", _UNET + "input_blocks.0.0.bias"
NORM_WEIGHT, NORM_BIAS = _UNET + "out.0.weight", _UNET + "out.0.bias"
OUT_WEIGHT, OUT_BIAS = _UNET + "out.2.weight", _UNET + "out.2.bias"
KEYS = (IN_WEIGHT, IN_BIAS, NORM_WEIGHT, NORM_BIAS, OUT_WEIGHT, OUT_BIAS)

# each colour value's direction over latent channels 1-3 (brightness, cyan-red, magenta-green,
# yellow-blue), per architecture: SuperMerger's COLS (SD1) and COLSXL (SDXL)
_COLOURS = {
    "sd1": ((-1, 1 / 3, 2 / 3), (1, 1, 0), (0, -1, -1), (1, 0, 1)),
    "sdxl": ((0, 0, 1), (1, 0, 0), (-1, -1, 0), (-1, 1, 0)),
}


def factors(values: dict[str, float], architecture: str) -> dict[str, object]:
    """What each of the six keys gets: a factor for the weights and the first two biases, and
    for the output bias a shift per latent channel (contrast on channel 0, colours on 1-3)."""
    v = {name: float(values.get(name, 0.0)) for name in VALUES}
    colours = _COLOURS[architecture]
    wanted = [v["brightness"], v["cyan_red"], v["magenta_green"], v["yellow_blue"]]
    shift = [sum(direction[c] * wanted[i] * 0.02 for i, direction in enumerate(colours)) for c in range(3)]
    return {
        IN_WEIGHT: 1 - v["detail_in"] * 0.01, IN_BIAS: 1 + v["detail_in"] * 0.02,
        NORM_WEIGHT: 1 - v["detail_out"] * 0.01, NORM_BIAS: 1 + v["detail_out"] * 0.02,
        OUT_WEIGHT: 1 - v["detail_out2"] * 0.01,
        OUT_BIAS: [v["contrast"] * 0.02, *shift],
    }


def architecture(model_config_id: str) -> str:
    return "sdxl" if model_config_id.startswith("sdxl") else "sd1"


@merge_method
def layer_adjust(
    a: Parameter(StateDict[torch.Tensor]),
    detail_in: Parameter(float) = 0.0,
    detail_out: Parameter(float) = 0.0,
    detail_out2: Parameter(float) = 0.0,
    contrast: Parameter(float) = 0.0,
    brightness: Parameter(float) = 0.0,
    cyan_red: Parameter(float) = 0.0,
    magenta_green: Parameter(float) = 0.0,
    yellow_blue: Parameter(float) = 0.0,
    **kwargs,
) -> Return(torch.Tensor):
    key = kwargs["key"]
    tensor = a[key]
    if key not in KEYS:
        return tensor
    values = dict(zip(VALUES, (detail_in, detail_out, detail_out2, contrast, brightness, cyan_red, magenta_green,
                               yellow_blue)))
    change = factors(values, architecture(a.model_config.identifier))[key]
    if key != OUT_BIAS:
        return tensor * change
    shift = torch.tensor(change, dtype=tensor.dtype, device=tensor.device)
    return tensor + shift[: tensor.shape[0]]
