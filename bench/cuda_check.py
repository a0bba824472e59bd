"""CUDA check of the standalone path: host in fp16 on the GPU, merges on the GPU, restore.

    python bench/cuda_check.py [--device cuda] [--out results.json]

Prints one JSON object: for SD1 and SDXL tiny models, whether a slot write + restore is
bit-exact for every key, whether the same trial parameters reproduce the same pixels and
different ones change them, a short real run's result, and per-trial timings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import safetensors.torch  # noqa: E402
import torch  # noqa: E402

from sd_optim.config import config_from_dict  # noqa: E402
from sd_optim.hosts.diffusers_host import DiffusersHost  # noqa: E402
from sd_optim.merging import MergeEngine  # noqa: E402
from sd_optim.run.runner import Runner, RunOptions, run_to_end  # noqa: E402
from sd_optim.search.planning import make_planner  # noqa: E402
from sd_optim.tiny_models import TINY_SIZE, tiny_diffusers_config, tiny_model_set  # noqa: E402


def config_for(arch, models, config_dir, out, device):
    guide = {"diffuser": [{"strategy": "select", "patterns": ["IN0*", "M00"]}],
             ("clip_l" if arch == "sd1" else "clip_g"): ["single"]}
    return config_from_dict({
        "models": [str(m) for m in models], "diffusers_config": str(config_dir), "device": device,
        "guide": guide, "scorers": ["image_stats"],
        "payloads": [{"name": "p", "prompt": "a lighthouse", "seed": 5, "steps": 4, "sampler": "Euler",
                      "width": TINY_SIZE, "height": TINY_SIZE, "batch_size": 2}],
        "optimizer": {"sampler": "tpe", "trials": 6, "seed": 0, "study": f"cuda-{arch}",
                      "baseline": ["defaults"]},
        "output_dir": str(out),
    })


def render(host, planner, engine, slot, params, runner):
    t0 = time.perf_counter()
    stats = engine.apply(planner.recipe(params), slot, planner.model_config)
    t1 = time.perf_counter()
    images = [np.asarray(g.image) for _, job in runner._jobs() for g in host.generate(job)]
    torch.cuda.synchronize() if host.device.type == "cuda" else None
    return images, stats.seconds, time.perf_counter() - t1


def check(arch: str, device: str, folder: Path) -> dict:
    models = tiny_model_set(arch, folder / "models", n=2, seed=0)
    config_dir = tiny_diffusers_config(arch, folder / f"{arch}-config")
    config = config_for(arch, models, config_dir, folder / "runs", device)
    t0 = time.perf_counter()
    host = DiffusersHost(models[0], config_dir=config_dir, device=device)
    load_s = time.perf_counter() - t0
    planner = make_planner(config, host.model_config())
    engine = MergeEngine(device=device)
    runner = Runner(config, host)
    mid, other = planner.space.midpoint(), {k: 0.9 for k in planner.space.midpoint()}
    with host.open_slot() as slot:
        live_dtypes = sorted({str(slot[k].dtype) for k in slot})
        a1, merge_s, gen_s = render(host, planner, engine, slot, mid, runner)
        b, _, _ = render(host, planner, engine, slot, other, runner)
        a2, merge2_s, gen2_s = render(host, planner, engine, slot, mid, runner)
    original = safetensors.torch.load_file(str(models[0]))
    exact, compared = True, 0
    with host.open_slot() as slot:
        for key, value in original.items():
            if key in slot:
                compared += 1
                live = slot[key]
                if not torch.equal(live.cpu(), value.to(live.dtype)):
                    exact = False
    final = run_to_end(Runner(config, host, RunOptions()))
    rows = [json.loads(line) for line in open(Path(final.run_dir) / "trials.jsonl")]
    return {
        "arch": arch, "device": str(host.device), "live_dtypes": live_dtypes, "load_s": round(load_s, 3),
        "same_params_same_pixels": bool(all(np.array_equal(x, y) for x, y in zip(a1, a2))),
        "different_params_change_pixels": float(np.abs(a1[0].astype(int) - b[0].astype(int)).mean()),
        "restore_bit_exact": exact, "keys_compared": compared,
        "merge_s": [round(merge_s, 4), round(merge2_s, 4)], "generate_s": [round(gen_s, 4), round(gen2_s, 4)],
        "run": {"reason": final.reason, "trials": final.trials, "best_value": final.best_value,
                "states": [r["state"] for r in rows],
                "median_timings": {k: round(float(np.median([r["timings"][k] for r in rows])), 4)
                                   for k in ("merge", "generate", "score")}},
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out")
    args = p.parse_args()
    result = {"torch": torch.__version__,
              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ("sd1", "sdxl"):
            try:
                result[arch] = check(arch, args.device, Path(tmp))
            except Exception as e:  # noqa: BLE001 - report every architecture's outcome
                import traceback

                result[arch] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-3000:]}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
