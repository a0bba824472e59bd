"""Helpers for tools/real-forge-check.sh: checks sd-optim's Forge host against a real Forge.

Run with the Forge venv's Python (it needs torch, safetensors, sd-mecha, numpy, Pillow):

    real_forge_check.py checkpoints DIR          two random full-size SD1.5 checkpoints (fp16)
    real_forge_check.py reqs-met FORGE OUT       Forge's requirement names at the installed versions
    real_forge_check.py check --url URL --ckpt-a NAME --ckpt-b NAME --a PATH --b PATH --out DIR

``check`` drives a running Forge over HTTP only (Forge's /sdapi/v1 API and sd-optim's
/sd-optim/ routes), prints one line per step, writes ``result.json`` and the images to ``--out``
and exits 1 if any step failed.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

CHECKPOINTS = {"rf-a.safetensors": 1, "rf-b.safetensors": 2}  # file name -> seed


# --- random SD1.5 checkpoints ------------------------------------------------------------------


def random_sd1_state_dict(seed: int) -> dict[str, Any]:
    """Every required ``sd1-ldm`` key (plus ``position_ids``) with its real shape, fp16, small
    random values. Biases are non-zero on purpose: with all-zero biases CLIP's final layer norm
    outputs mean exactly 0 and Forge's prompt emphasis divides 0/0 (NaN conditioning, black
    images; docs/hosts/real-forge-check.md, checkpoints)."""
    import torch
    from sd_mecha.extensions import model_configs

    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {}
    for key, meta in model_configs.resolve("sd1-ldm").keys().items():
        if key.endswith("position_ids"):
            out[key] = torch.arange(meta.shape[-1], dtype=torch.int64).reshape(meta.shape)
            continue
        if meta.optional:
            continue  # EMA weights and the noise-schedule buffers
        shape = tuple(meta.shape)
        if len(shape) == 1 and key.endswith(".weight"):  # every 1-D weight of SD1 is a norm's scale
            t = 1.0 + 0.05 * torch.randn(shape, generator=gen)
        elif len(shape) == 1 or "embedding" in key:  # biases, token and position embeddings
            t = 0.02 * torch.randn(shape, generator=gen)
        else:
            fan_in = 1
            for n in shape[1:]:
                fan_in *= n
            t = torch.randn(shape, generator=gen) / fan_in ** 0.5
        out[key] = t.to(torch.float16)
    return out


def write_checkpoints(folder: Path) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    for name, seed in CHECKPOINTS.items():
        path = folder / name
        if path.is_file():
            print(f"{path}: exists")
            continue
        sd = random_sd1_state_dict(seed)
        tmp = path.with_suffix(".tmp")
        save_file(sd, str(tmp))
        tmp.rename(path)
        print(f"{path}: {len(sd)} keys, {path.stat().st_size / 2**30:.2f} GiB, seed {seed}")


# --- Forge's requirements, as installed ---------------------------------------------------------


def write_reqs_met(forge: Path, out: Path) -> None:
    """Forge's launcher reinstalls ``requirements_versions.txt`` whenever one installed version
    differs (``requirements_met``), which would pull Forge's own pins (setuptools 69.5.1,
    fastapi 0.104.1, ...) over the verified set. Point ``REQS_FILE`` at this file instead: the
    same package names at the versions installed here; a missing package is an error."""
    import importlib.metadata

    from packaging.version import Version

    lines, differ = [], []
    for raw in (forge / "requirements_versions.txt").read_text(encoding="utf-8").splitlines():
        line = raw.split("#")[0].strip()
        if not line:
            continue
        name = re.split(r"[=<>~!\[ ]", line, maxsplit=1)[0]
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            sys.exit(f"error: Forge needs {name}, which is not installed")
        lines.append(f"{name}=={version}")
        if "==" in line and Version(line.split("==", 1)[1].strip()) != Version(version):
            differ.append(f"{line} -> {version}")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{out}: {len(lines)} requirements; differing from Forge's pins: {', '.join(differ) or 'none'}")


# --- the HTTP check -----------------------------------------------------------------------------


class Forge:
    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def call(self, method: str, path: str, body: Any = None, timeout: float = 600) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        code, out = self.call(method, path, body)
        if code != 200:
            raise RuntimeError(f"{method} {path}: HTTP {code}: {str(out)[:2000]}")
        return out

    def status(self) -> dict[str, Any]:
        return self.ok("GET", "/sd-optim/status")

    def select(self, checkpoint: str) -> None:
        self.ok("POST", "/sdapi/v1/options", {"sd_model_checkpoint": checkpoint})

    def txt2img(self, seed: int = 7) -> tuple[Any, float, str]:
        """The image (RGB uint8 array), the seconds the request took and its infotext."""
        import numpy as np
        from PIL import Image

        body = {"prompt": "a red house by a lake", "negative_prompt": "", "seed": seed, "steps": 2,
                "width": 64, "height": 64, "sampler_name": "Euler", "scheduler": "Automatic",
                "cfg_scale": 7, "batch_size": 1, "n_iter": 1}
        t0 = time.perf_counter()
        out = self.ok("POST", "/sdapi/v1/txt2img", body)
        seconds = time.perf_counter() - t0
        image = Image.open(io.BytesIO(base64.b64decode(out["images"][0]))).convert("RGB")
        info = json.loads(out.get("info") or "{}")
        return np.asarray(image), seconds, (info.get("infotexts") or [""])[0]

    def wait_run(self, timeout: float = 1800) -> dict[str, Any]:
        end = time.time() + timeout
        while time.time() < end:
            s = self.status()
            if s.get("state") != "running":
                return s
            time.sleep(1)
        raise TimeoutError("the sd-optim run did not finish in time")


def run_config(a: str, b: str, out_dir: str, study: str, after_run: dict[str, Any],
               trials: int = 3) -> dict[str, Any]:
    return {
        "models": [{"path": a, "name": "rf_a"}, {"path": b, "name": "rf_b"}],
        "merge": {"method": "weighted_sum"},
        "guide": {"diffuser": [{"strategy": "single"}], "clip_l": [{"strategy": "single"}]},
        "payloads": [{"name": "house", "prompt": "a red house by a lake", "seed": 3, "steps": 2,
                      "sampler": "Euler", "scheduler": "Automatic", "width": 64, "height": 64}],
        "scorers": [{"name": "image_stats"}],
        "optimizer": {"sampler": "random", "trials": trials, "seed": 0, "study": study},
        "after_run": after_run,
        "output_dir": out_dir,
    }


def trial_timings(run_dir: str) -> list[dict[str, Any]]:
    path = Path(run_dir) / "trials.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        t = json.loads(line)
        rows.append({k: t.get(k) for k in ("number", "state", "value", "params", "timings", "reason")
                     if k in t})
    return rows


class Check:
    def __init__(self, args):
        self.args = args
        self.forge = Forge(args.url)
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.runs = str(args.runs)  # inside Forge's folders: the API refuses others (README, "Security")
        self.results: list[dict[str, Any]] = []
        self.data: dict[str, Any] = {}

    def record(self, name: str, passed: bool, detail: str = "", **extra) -> bool:
        self.results.append({"step": name, "passed": passed, "detail": detail, **extra})
        print(f"[{'PASS' if passed else 'FAIL'}] {name}: {detail}", flush=True)
        return passed

    def image(self, label: str, seed: int = 7):
        from PIL import Image

        img, seconds, info = self.forge.txt2img(seed)
        Image.fromarray(img).save(self.out / f"{label}.png")
        self.data.setdefault("txt2img_seconds", {})[label] = round(seconds, 3)
        self.data.setdefault("infotexts", {})[label] = info
        return img

    @staticmethod
    def same(x, y) -> bool:
        return x.shape == y.shape and bool((x == y).all())

    @staticmethod
    def diff(x, y) -> str:
        import numpy as np

        d = np.abs(x.astype(int) - y.astype(int))
        return f"max |diff| {d.max()}, mean {d.mean():.2f}"

    def run(self, name: str, after_run: dict[str, Any]) -> dict[str, Any] | None:
        a = self.args
        cfg = run_config(a.a, a.b, self.runs, f"{name}-{int(time.time())}", after_run)
        t0 = time.perf_counter()
        code, started = self.forge.call("POST", "/sd-optim/run", {"config": cfg})
        if code != 200:
            self.record(f"{name}: POST /sd-optim/run", False, f"HTTP {code}: {str(started)[:3000]}")
            return None
        status = self.forge.wait_run()
        seconds = time.perf_counter() - t0
        timings = trial_timings(status.get("run_dir", ""))
        self.data[name] = {"status": status, "wall_seconds": round(seconds, 2), "trials": timings}
        ok = status.get("state") == "finished" and status.get("trials_done") == 3 and \
            all(str(t.get("state")).upper() == "COMPLETE" for t in timings) and len(timings) == 3
        self.record(f"{name}: run of 3 trials", ok, f"{status.get('text')} ({seconds:.1f} s)")
        for t in timings:
            print(f"    trial {t.get('number')}: {t.get('state')} value={t.get('value')} "
                  f"params={t.get('params')} timings={t.get('timings')}", flush=True)
        return status

    def main(self) -> int:
        a, forge = self.args, self.forge
        try:
            self.steps(a, forge)
        except Exception as e:  # noqa: BLE001 - report which step broke, keep what was seen
            self.record("check aborted", False, f"{type(e).__name__}: {e}")
        (self.out / "result.json").write_text(json.dumps({"results": self.results, **self.data},
                                                         indent=2, default=str), encoding="utf-8")
        failed = [r["step"] for r in self.results if not r["passed"]]
        print(f"{len(self.results) - len(failed)} passed, {len(failed)} failed")
        return 1 if failed else 0

    def steps(self, a, forge: Forge) -> None:
        s = forge.status()
        self.record("GET /sd-optim/status before any run", s.get("state") == "idle", json.dumps(s))
        code, config = forge.call("GET", "/config")
        text = json.dumps(config)
        self.record("the UI has the Optimize Merge tab and its settings",
                    code == 200 and "Optimize Merge" in text and "sd_optim_cache_budget_gb" in text,
                    f"GET /config: HTTP {code}, {len(text)} characters")
        outside = run_config(a.a, a.b, str(self.out / "runs"), f"refused-{int(time.time())}", {})
        code, body = forge.call("POST", "/sd-optim/run", {"config": outside})
        fields = [p.get("field") for p in body.get("problems", [])] if isinstance(body, dict) else []
        self.record("a run writing outside Forge's folders is refused (400, output_dir)",
                    code == 400 and fields == ["output_dir"], f"HTTP {code}: {str(body)[:300]}")

        forge.select(a.ckpt_a)
        image_a = self.image("A")  # first generation also loads the checkpoint (lazy in Forge)
        image_a2 = self.image("A-again")
        self.record("txt2img is deterministic", self.same(image_a, image_a2), self.diff(image_a, image_a2))
        self.record("txt2img image is not blank", float(image_a.std()) > 1.0,
                    f"std {float(image_a.std()):.2f}, mean {float(image_a.mean()):.2f}")

        # 1. save_best: the original comes back pixel-exact
        status = self.run("run1-save-best", {"save_best": True})
        if status is not None:
            saved = status.get("saved_checkpoint") or ""
            self.record("run1: save_best wrote a checkpoint", bool(saved) and Path(saved).is_file(),
                        f"{saved}" + (f" ({Path(saved).stat().st_size / 2**30:.2f} GiB)"
                                       if saved and Path(saved).is_file() else ""))
        after = self.image("after-run1")
        self.record("run1: txt2img after the run equals image A", self.same(image_a, after),
                    self.diff(image_a, after))
        saved_name = Path(status.get("saved_checkpoint") or "").name if status else ""

        # 2. keep_best: the merge stays until Forge reloads (same seeds: the same best trial as run 1)
        status2 = self.run("run2-keep-best", {"keep_best": True})
        kept = self.image("after-run2-kept")
        self.record("run2: txt2img after keep_best differs from A", not self.same(image_a, kept),
                    self.diff(image_a, kept))
        info = self.data["infotexts"]["after-run2-kept"]
        self.record("run2: the kept merge is named in the infotext", "sd-optim" in info, info)
        forge.select(a.ckpt_b)
        forge.select(a.ckpt_a)
        bounced = self.image("after-b-and-back-no-generation")
        self.data["select B then A without generating equals A"] = self.same(image_a, bounced)
        print(f"    (info) options B then A with no generation in between: "
              f"{'equals A' if self.same(image_a, bounced) else 'still the kept merge'} "
              f"({self.diff(image_a, bounced)})", flush=True)
        forge.select(a.ckpt_b)
        image_b = self.image("B")
        self.record("checkpoint B renders differently from A", not self.same(image_a, image_b),
                    self.diff(image_a, image_b))
        forge.select(a.ckpt_a)
        reloaded = self.image("A-reloaded")
        self.record("after switching to B and back, txt2img equals A", self.same(image_a, reloaded),
                    self.diff(image_a, reloaded))
        if saved_name and status and status2 and status.get("best_trial") == status2.get("best_trial"):
            # the saved best of run 1, loaded by Forge's own loader, against the merge kept in place
            forge.select(saved_name)
            from_file = self.image("saved-best-loaded")
            # not bit-exact: the file is fp16 (sd-mecha's output dtype) while the kept merge sits in
            # Forge's fp32 weights (--no-half); allow one level of 255 per channel
            import numpy as np

            close = kept.shape == from_file.shape and \
                int(np.abs(kept.astype(int) - from_file.astype(int)).max()) <= 1
            self.record("run1's saved checkpoint renders like run2's kept merge (same trial, within 1/255)",
                        close, f"{self.diff(kept, from_file)}; bit-exact: {self.same(kept, from_file)}")
            forge.select(a.ckpt_a)
            back = self.image("A-after-saved")
            self.record("back on A after loading the saved checkpoint equals A", self.same(image_a, back),
                        self.diff(image_a, back))

        # 3. stop and 409 while a run is live
        cfg = run_config(a.a, a.b, self.runs, f"run3-stop-{int(time.time())}", {}, trials=20)
        forge.ok("POST", "/sd-optim/run", {"config": cfg})
        time.sleep(a.stop_after)
        code, body = forge.call("POST", "/sd-optim/run", {"config": cfg})
        self.record("run3: a second POST /sd-optim/run while live is refused with 409", code == 409,
                    f"HTTP {code}: {str(body)[:300]}")
        t0 = time.perf_counter()
        stop = forge.ok("POST", "/sd-optim/stop")
        status = forge.wait_run()
        stopped_in = time.perf_counter() - t0
        self.data["run3-stop"] = {"stop_response": stop, "status": status,
                                  "seconds_to_stop": round(stopped_in, 2),
                                  "trials": trial_timings(status.get("run_dir", ""))}
        self.record("run3: POST /sd-optim/stop ends the run early",
                    status.get("state") == "finished" and (status.get("trials_done") or 0) < 20,
                    f"{status.get('text')} ({stopped_in:.1f} s after stop)")
        after = self.image("after-run3-stop")
        self.record("run3: txt2img after the stopped run equals A", self.same(image_a, after),
                    self.diff(image_a, after))
        s = forge.status()
        self.record("GET /sd-optim/status after the runs", s.get("state") in ("finished", "idle"), s.get("text", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("checkpoints")
    p.add_argument("folder", type=Path)
    p = sub.add_parser("reqs-met")
    p.add_argument("forge", type=Path)
    p.add_argument("out", type=Path)
    p = sub.add_parser("check")
    p.add_argument("--url", default="http://127.0.0.1:7861")
    p.add_argument("--ckpt-a", default="rf-a.safetensors", help="Forge checkpoint name of model A")
    p.add_argument("--ckpt-b", default="rf-b.safetensors")
    p.add_argument("--a", required=True, help="path of checkpoint A")
    p.add_argument("--b", required=True, help="path of checkpoint B")
    p.add_argument("--out", required=True)
    p.add_argument("--runs", required=True, help="the runs' output_dir: a folder inside Forge's (its outputs)")
    p.add_argument("--stop-after", type=float, default=20.0, help="seconds into run 3 to POST stop")
    args = parser.parse_args(argv)
    if args.cmd == "checkpoints":
        write_checkpoints(args.folder)
        return 0
    if args.cmd == "reqs-met":
        write_reqs_met(args.forge, args.out)
        return 0
    return Check(args).main()


if __name__ == "__main__":
    sys.exit(main())
