"""The Host / Slot contract (sd_optim/hosts/base.py), written once and run against every host:
the three fake WebUIs (tests/fakes: A1111, Forge, the ldm_patched family as reForge and Forge
Classic) and the standalone diffusers host. What only one WebUI does is tested in its own file
(tests/test_host_<webui>.py, tests/test_diffusers_host.py)."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
import types

import numpy as np
import optuna
import pytest
import safetensors.torch
import torch
from fakes.a1111 import installed as a1111
from fakes.forge import installed as forge
from fakes.ldm_patched import installed as ldm_patched
from safetensors.torch import save_file
from test_runner import make_config

from sd_optim.hosts.a1111 import A1111Host
from sd_optim.hosts.diffusers_host import DiffusersHost
from sd_optim.hosts.forge import ForgeHost
from sd_optim.hosts.ldm_patched import LdmPatchedHost
from sd_optim.hosts.webui_base import HostStateError
from sd_optim.merging import MergeEngine
from sd_optim.run import events as ev
from sd_optim.run.runner import Runner, run_to_end
from sd_optim.search.planning import make_planner
from sd_optim.ui.runs import Defaults, RunManager

optuna.logging.set_verbosity(optuna.logging.WARNING)

P1 = {"diffuser.all.alpha": 0.1, "clip_l.all.alpha": 0.1}
P2 = {"diffuser.all.alpha": 0.9, "clip_l.all.alpha": 0.9}
XL = {"clip_g.all.alpha": 0.1}
XL_GUIDE = {"diffuser": ["single"], "clip_l": ["single"], "clip_g": ["single"]}
UNET_KEY = "model.diffusion_model.out.2.weight"


def pixels(image) -> np.ndarray:
    return np.asarray(image).astype(int)


def raw(t: torch.Tensor) -> torch.Tensor:
    """The bytes of a tensor (torch.equal has no fp8 kernel on the CPU)."""
    return t.contiguous().view(torch.uint8) if t.dtype.itemsize == 1 else t


def assert_same(now: dict, before: dict) -> None:
    assert set(now) == set(before)
    for name, value in before.items():
        assert now[name].dtype == value.dtype and torch.equal(raw(now[name]), raw(value)), name


# --- one harness per host: how to install it and look at it from outside ---------------------------


class WebUIHarness:
    """A fake WebUI with its host. ``fake`` is the fake's handle (tests/fakes/<webui>)."""

    def __init__(self, kind: str, host_cls, installed, **options):
        self.kind, self.host_cls, self._installed, self._options = kind, host_cls, installed, options
        # the WebUI's own infotext for the runs' payload (reForge adds its schedule type)
        self.infotext = "Steps: 2, Sampler: Euler" + (", Schedule type: Automatic" if kind == "reforge" else "")

    @contextlib.contextmanager
    def start(self, paths, config_dir, arch: str):
        options = dict(self._options)
        if self.kind == "forge":
            options["arch"] = arch
        with self._installed(paths, config_dir, **options) as fake:
            self.fake, self.paths, self.host = fake, paths, self.host_cls()
            yield self

    def live(self) -> dict[str, torch.Tensor]:
        return self.fake.parameters()

    def user_image(self, prompt="a red fox") -> np.ndarray:
        return pixels(self.fake.txt2img(prompt).images[0])

    @contextlib.contextmanager
    def other_architecture(self, tmp_path):
        """The loaded model made to look like SD2, as the WebUI flags it."""
        self.fake.model.is_sd1, self.fake.model.is_sd2 = False, True
        try:
            yield self.host.model_config, "the loaded model is SD2"
        finally:
            self.fake.model.is_sd1, self.fake.model.is_sd2 = True, False

    @property
    def queue_lock(self):
        return self.fake.call_queue.queue_lock

    def dropdown_choices(self):
        """What the WebUI's checkpoint dropdown offers, as read now (no refresh of its own): in
        A1111 and the ldm_patched family the Settings component (a stand-in with its ``choices``,
        registered as ``ui_settings`` does), in Forge the checkpoint tiles its ``refresh_models``
        gives the dropdown at every page load and ↻ (forge.md §3)."""
        if self.kind == "forge":
            return self.fake.sd_models.checkpoint_tiles
        info = self.fake.shared.opts.data_labels["sd_model_checkpoint"]
        component = types.SimpleNamespace(**info.component_args())
        self.fake.shared.settings_components = {"sd_model_checkpoint": component}
        return lambda: component.choices

    def load_other(self):
        """The WebUI loads the second checkpoint (the caller holds the queue lock, as the WebUI's
        own queued switch does)."""
        fake, path = self.fake, self.paths[1]
        if self.kind == "forge":
            fake.select(path)
            fake.sd_models.forge_model_reload()
            return
        info = fake.sd_models.checkpoint_aliases[path.name]
        fake.shared.opts.data["sd_model_checkpoint"] = info.title
        fake.sd_models.load_model(info)


class DiffusersHarness:
    """The standalone host on a tiny model (its own process: no queue lock, no LoRA)."""

    kind = "diffusers"
    queue_lock = None

    @contextlib.contextmanager
    def start(self, paths, config_dir, arch: str):
        self.paths, self._config_dir = paths, config_dir
        self.host = DiffusersHost(paths[0], config_dir=config_dir, device="cpu")
        self._keys = list(safetensors.torch.load_file(str(paths[0])))
        yield self

    def live(self) -> dict[str, torch.Tensor]:
        return {k: self.host._read(k).clone() for k in self._keys}

    user_image = None

    @contextlib.contextmanager
    def other_architecture(self, tmp_path):
        from sd_mecha.extensions import model_configs

        kohya = tmp_path / "kohya_style.safetensors"
        save_file({k: torch.zeros(1) for k in model_configs.resolve("sd1-kohya").keys()}, kohya)  # noqa: SIM118
        # the standalone host refuses such a file when it is built
        yield lambda: DiffusersHost(kohya, config_dir=self._config_dir), "kohya_style.safetensors.*sd1-kohya"


def _harnesses():
    return {"a1111": lambda: WebUIHarness("a1111", A1111Host, a1111),
            "forge": lambda: WebUIHarness("forge", ForgeHost, forge),
            "reforge": lambda: WebUIHarness("reforge", LdmPatchedHost, ldm_patched, profile="reforge"),
            "classic": lambda: WebUIHarness("classic", LdmPatchedHost, ldm_patched, profile="classic"),
            "diffusers": DiffusersHarness}


HOSTS = ["a1111", "forge", "reforge", "classic", "diffusers"]
WEBUIS = [h for h in HOSTS if h != "diffusers"]


def _start(request, kind: str, arch: str = "sd1"):
    paths = request.getfixturevalue(f"tiny_{arch}_paths")
    config_dir = request.getfixturevalue(f"tiny_{arch}_config_dir")
    config_id = {"sd1": "sd1-ldm", "sdxl": "sdxl-sgm"}[arch]
    return _harnesses()[kind]().start(paths, config_dir, config_id)


@pytest.fixture(params=HOSTS)
def harness(request):
    with _start(request, request.param) as h:
        yield h


@pytest.fixture(params=WEBUIS)
def webui(request):
    with _start(request, request.param) as h:
        yield h


def render(host, config, params, n_images=1):
    planner = make_planner(config, host.model_config())
    job = Runner(config, host)._jobs()[0][1]
    with host.open_slot() as slot:
        MergeEngine().apply(planner.recipe(params), slot, planner.model_config)
        slot.commit()
        return [pixels(g.image) for g in host.generate(job)]


# --- the contract ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", HOSTS)
@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_slot_reads_writes_and_restores_every_key_bit_exact(request, kind, arch):
    with _start(request, kind, arch) as h:
        original = safetensors.torch.load_file(str(h.paths[0]))
        other = safetensors.torch.load_file(str(h.paths[1]))
        before = h.live()
        assert h.host.model_config() == {"sd1": "sd1-ldm", "sdxl": "sdxl-sgm"}[arch]
        with h.host.open_slot() as slot:
            # every key of the file, in the file's layout (q/k/v re-joined, projections as stored)
            assert set(original) <= set(slot)
            for key, value in original.items():
                assert torch.equal(slot[key], value), key
            for key, value in other.items():
                slot[key] = value.clone()
            for key, value in other.items():
                assert torch.equal(slot[key], value), key
            assert not torch.equal(h.live()[_live_name(h, UNET_KEY)], before[_live_name(h, UNET_KEY)])
        assert_same(h.live(), before)


@pytest.mark.parametrize("kind", HOSTS)
def test_the_engine_merges_in_place_as_sd_mecha_does_and_restores(request, kind, tmp_path, monkeypatch):
    """Where a slot offers the live tensor (``writable``) the fast path computes into it; every
    key equals ``sd_mecha.merge`` (bit-exact: one lerp in fp32 either way) and restore is exact.
    A1111 keeps ``slot[key] = value``: its Lora extension's load hook must see every write."""
    import sd_mecha

    with _start(request, kind) as h:
        config = make_config(h.paths, request.getfixturevalue("tiny_sd1_config_dir"), tmp_path / "runs")
        planner = make_planner(config, h.host.model_config())
        expected = sd_mecha.merge(planner.recipe(P1), merge_dtype=torch.float32, output_dtype=None,
                                  check_finite_output=False, tqdm=_Quiet)
        before = h.live()
        with h.host.open_slot() as slot:
            offered = slot.writable(UNET_KEY)
            assert (offered is None) == (kind == "a1111"), kind
            if offered is not None:
                assert offered.data_ptr() == slot[UNET_KEY].data_ptr()  # the live tensor itself
            copied, setitem = [], type(slot).__setitem__
            monkeypatch.setattr(type(slot), "__setitem__", lambda s, k, v: copied.append(k) or setitem(s, k, v))
            stats = MergeEngine().apply(planner.recipe(P1), slot, planner.model_config)
            assert stats.path == "fast" and (UNET_KEY in copied) == (offered is None)
            for key in set(expected) & set(slot) - {"__metadata__"}:
                live = slot[key]
                assert torch.equal(live, expected[key].to(live.dtype)), key
        assert_same(h.live(), before)


class _Quiet:
    """A tqdm stand-in without output."""

    def __init__(self, iterable=None, **_):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        return False

    def update(self, *_):
        pass

    def set_postfix(self, *_, **__):
        pass


def _live_name(h, key: str) -> str:
    """The harness's ``live()`` name of a UNet checkpoint key."""
    if h.kind == "a1111" or h.kind == "diffusers":
        return key
    return "unet." + key[len("model.diffusion_model."):]


def test_same_parameters_same_pixels_other_parameters_other_pixels(harness, request, tmp_path):
    paths = request.getfixturevalue("tiny_sd1_paths")
    config = make_config(paths, request.getfixturevalue("tiny_sd1_config_dir"), tmp_path / "runs")
    before = harness.live()
    a = render(harness.host, config, P1)
    b = render(harness.host, config, P2)
    assert np.abs(a[0] - b[0]).mean() > 1.0
    assert np.array_equal(render(harness.host, config, P1)[0], a[0])
    assert_same(harness.live(), before)


def test_sdxl_merge_changes_the_picture_and_restores(request, tmp_path):
    paths = request.getfixturevalue("tiny_sdxl_paths")
    config = make_config(paths, request.getfixturevalue("tiny_sdxl_config_dir"), tmp_path / "runs",
                         guide=XL_GUIDE)
    for kind in HOSTS:
        with _start(request, kind, "sdxl") as h:
            before = h.live()
            user_before = h.user_image() if h.user_image else None
            a = render(h.host, config, {**P1, **XL})
            b = render(h.host, config, {**P2, "clip_g.all.alpha": 0.9})
            assert np.abs(a[0] - b[0]).mean() > 1.0, kind
            assert np.array_equal(render(h.host, config, {**P1, **XL})[0], a[0]), kind
            assert_same(h.live(), before)
            if user_before is not None:  # no stale conds from the merged CLIP-G / CLIP-L
                assert np.array_equal(h.user_image(), user_before), kind


def test_stop_between_images(harness, request, tmp_path):
    paths = request.getfixturevalue("tiny_sd1_paths")
    config = make_config(paths, request.getfixturevalue("tiny_sd1_config_dir"), tmp_path / "runs")
    job = Runner(config, harness.host)._jobs()[0][1]
    job = type(job)(**{**job.__dict__, "n_images": 3})
    with harness.host.open_slot():
        asked = []
        images = list(harness.host.generate(job, should_stop=lambda: bool(asked.append(1)) or len(asked) > 1))
    assert len(images) == 1 and images[0].seed == job.seed


def test_another_architecture_is_refused_before_any_write(harness, tmp_path):
    before = harness.live()
    with harness.other_architecture(tmp_path) as (start, why), \
            pytest.raises((HostStateError, ValueError), match=why):
        start()
    assert_same(harness.live(), before)


def test_exception_in_the_slot_restores_and_frees_the_webui(harness):
    before = harness.live()
    with pytest.raises(KeyboardInterrupt), harness.host.open_slot() as slot:
        slot[UNET_KEY] = torch.zeros_like(slot[UNET_KEY])
        raise KeyboardInterrupt
    assert_same(harness.live(), before)
    if harness.queue_lock is not None:
        assert harness.fake.state.job == "" and harness.queue_lock.acquire(blocking=False)
        harness.queue_lock.release()


def test_one_run_at_a_time(harness):
    """A second slot is refused at once (no wait): in a WebUI even from another host object (the
    run lock is the WebUI's, not the object's), in the standalone host from the same one."""
    other = harness.host if harness.kind == "diffusers" else harness.host_cls()
    second = other.open_slot()
    with harness.host.open_slot(), pytest.raises(RuntimeError, match="already (live|open)"):
        second.__enter__()


def test_user_lora_neither_leaks_into_trials_nor_is_lost(webui, request, tmp_path):
    paths = request.getfixturevalue("tiny_sd1_paths")
    config = make_config(paths, request.getfixturevalue("tiny_sd1_config_dir"), tmp_path / "runs")
    clean_params = webui.live()
    clean = render(webui.host, config, P1)
    with_lora = webui.user_image("<lora:detail> a red fox")  # the user's last generation
    assert not torch.equal(webui.live()[_live_name(webui, UNET_KEY)],
                           clean_params[_live_name(webui, UNET_KEY)])  # baked into the weights
    assert np.array_equal(render(webui.host, config, P1)[0], clean[0])
    assert_same(webui.live(), clean_params)  # the LoRA un-baked, the merge restored
    # the user's next generation with their LoRA is what it was
    assert np.array_equal(webui.user_image("<lora:detail> a red fox"), with_lora)


def test_the_model_is_read_once_the_queue_is_the_runs(webui):
    """A checkpoint load queued before the run finishes first; the run merges into what it
    loaded (the loaded model is read inside the queue lock, never before it)."""
    other = safetensors.torch.load_file(str(webui.paths[1]))[UNET_KEY]
    lock, got = webui.queue_lock, {}

    def run():
        with webui.host.open_slot() as slot:
            got["value"] = slot[UNET_KEY].clone()

    lock.acquire()  # someone else's queued work (a generation, a checkpoint switch) is running
    try:
        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 30
        while not lock._waiters and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)  # until the run waits for the queue
        assert lock._waiters, "the run did not wait for the queue lock"
        webui.load_other()
    finally:
        lock.release()
    thread.join(120)
    assert torch.equal(got["value"], other)


def test_a_saved_checkpoint_is_listed_as_the_refresh_button_lists_it(webui):
    choices = webui.dropdown_choices()
    saved = webui.host.checkpoint_dir() / "saved-trial1.safetensors"
    shutil.copy(webui.paths[0], saved)
    assert str(saved) not in [c.path for c in webui.host.checkpoints()]
    assert not [c for c in choices() if "saved-trial1" in c]
    webui.host.refresh_checkpoints()  # what the runner calls after save-best
    assert str(saved) in [c.path for c in webui.host.checkpoints()]  # the WebUI's checkpoint list
    assert [c for c in choices() if "saved-trial1" in c]  # the dropdown built before the save
    if webui.kind != "forge":  # the option's own choices, which a page built from now on shows
        tiles = webui.fake.shared.opts.data_labels["sd_model_checkpoint"].component_args()["choices"]
        assert [c for c in tiles if "saved-trial1" in c]


# --- a run in a WebUI -----------------------------------------------------------------------------


@pytest.fixture
def cfg(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    def make(**overrides):
        return make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path / "runs",
                           **{"optimizer": {"trials": 2}, **overrides})

    return make


def assert_webui_free(webui) -> None:
    """No job of the run's left, the queue free for the user."""
    assert webui.fake.state.job == "" and webui.queue_lock.acquire(blocking=False)
    webui.queue_lock.release()


def test_run_holds_the_queue_and_restores_everything(webui, cfg):
    before_image = webui.user_image()
    before = webui.live()
    runner = Runner(cfg(), webui.host)
    seen = []

    def probe(event):
        if isinstance(event, ev.TrialStarted):
            got = []
            t = threading.Thread(target=lambda: got.append(webui.queue_lock.acquire(blocking=False)))
            t.start()
            t.join()
            seen.append((got[0], webui.fake.state.job))

    runner.listeners.append(probe)
    final = run_to_end(runner)
    assert final.reason == "completed" and final.trials == 2
    assert seen == [(False, "sd-optim")] * 2
    rows = [e for e in runner.history if isinstance(e, ev.ImageScored)]
    assert webui.infotext in rows[0].infotext and rows[0].seed == 3
    # the trial in the WebUI's own infotext
    assert "sd-optim: s trial 0" in rows[0].infotext and "sd-optim params: " in rows[0].infotext
    assert_webui_free(webui)
    assert_same(webui.live(), before)
    # the class-level conds computed from merged text encoders are gone too
    assert np.array_equal(webui.user_image(), before_image)


@pytest.mark.parametrize("how", ["close", "throw"])
def test_run_ended_mid_trial_fails_the_trial_and_restores(webui, cfg, how):
    before = webui.live()
    runner = Runner(cfg(), webui.host)
    gen = runner.events()
    for event in gen:
        if isinstance(event, ev.TrialMerged):
            break
    if how == "close":
        gen.close()
    else:
        with pytest.raises(SystemExit):  # a KeyboardInterrupt ends the run with its summary instead
            gen.throw(SystemExit(1))
    assert runner.state.study.trials[0].state == optuna.trial.TrialState.FAIL
    assert_webui_free(webui)
    assert_same(webui.live(), before)


def test_interrupt_mid_sampling_fails_the_trial_unscored(webui, cfg):
    fake, before = webui.fake, webui.live()
    events = []
    for event in Runner(cfg(), webui.host).events():
        events.append(event)
        if isinstance(event, ev.TrialMerged) and event.number == 1:
            fake.renderer.step_hook = lambda step: fake.state.interrupt()  # the Interrupt button
    last = [e for e in events if isinstance(e, ev.TrialFinished)][-1]
    assert (last.number, last.state, last.reason) == (1, "FAIL", "interrupted")
    assert events[-1].reason == "interrupted"
    assert not [e for e in events if isinstance(e, ev.ImageScored) and e.trial == 1]
    assert_same(webui.live(), before)
    fake.renderer.step_hook = None
    assert run_to_end(Runner(cfg(optimizer={"trials": 1, "seed": 0, "study": "t"}), webui.host)).reason == "completed"


def test_the_status_of_a_kept_merge_says_what_ends_it_here(webui, cfg):
    manager = RunManager(webui.host, Defaults())
    manager.start(cfg(after_run={"keep_best": True}).to_dict())
    status = manager.wait(120)
    assert status["kept_loaded"] and f"stays loaded ({webui.host.kept_until})" in status["text"]
    # Forge reloads a switched checkpoint only when it next generates (docs/hosts/forge.md)
    assert ("without generating" in webui.host.kept_until) == (webui.kind == "forge")
    manager.shutdown()
