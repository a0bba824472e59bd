"""Samplers with their options, and the trial limit a UI can change during a run."""

import optuna
import pytest

from sd_optim.config import config_from_dict
from sd_optim.errors import ConfigError, SpaceError
from sd_optim.run.study import make_sampler, open_study
from sd_optim.search.planning import MergePlanner
from sd_optim.search.space import build_search_space

optuna.logging.set_verbosity(optuna.logging.WARNING)


def space():
    c = config_from_dict({"models": ["a.safetensors", "b.safetensors"], "payloads": [{"prompt": "x"}],
                          "scorers": ["image_stats"],
                          "guide": {"clip_l": ["single"], "diffuser": [{"strategy": "group",
                                                                        "groups": {"in": ["IN*"], "out": ["OUT*"]}}],
                                    "bounds": {"diffuser.out.alpha": {"choices": [0.0, 0.5, 1.0]}}}})
    return build_search_space(c, "sd1-ldm")


@pytest.mark.parametrize("name, options", [
    ("tpe", {"n_startup_trials": 2}), ("cmaes", {}), ("gp", {"n_startup_trials": 2}),
    ("qmc", {"scramble": True}), ("random", {}), ("grid", {"points": 3}),
])
def test_every_sampler_runs_an_ask_tell_study(name, options):
    s = space()
    dists = s.distributions()
    if name == "cmaes":  # CMA-ES models continuous parameters; a categorical one falls back to random
        dists = {k: v for k, v in dists.items() if not isinstance(v, optuna.distributions.CategoricalDistribution)}
    study = optuna.create_study(direction="maximize", sampler=make_sampler(name, options, 0, dists))
    for _ in range(4):
        trial = study.ask(dists)
        study.tell(trial, -(trial.params["clip_l.all.alpha"] - 0.3) ** 2)
    assert len(study.trials) == 4 and study.best_value <= 0
    assert all(set(t.params) == set(dists) for t in study.trials)


def _params_of(name: str, seed: int, trials: int = 12) -> list[dict]:
    """The parameters of ``trials`` trials (past TPE's and GP's 10 random start-up trials)."""
    dists = {k: v for k, v in space().distributions().items()
             if not isinstance(v, optuna.distributions.CategoricalDistribution)}
    study = optuna.create_study(direction="maximize", sampler=make_sampler(name, {}, seed, dists))
    for _ in range(trials):
        trial = study.ask(dists)
        study.tell(trial, -sum((v - 0.3) ** 2 for v in trial.params.values()))
    return [t.params for t in study.trials]


@pytest.mark.parametrize("name", ["tpe", "cmaes", "gp", "qmc", "random", "grid"])
def test_every_sampler_repeats_its_trials_with_a_seed_and_changes_them_with_another(name):
    """``optimizer.seed``: the same seed, the same trials (past the random start-up trials too);
    another seed, other trials — QMC included (scrambled by default: unscrambled, it ignores it)."""
    assert _params_of(name, 1) == _params_of(name, 1)
    assert _params_of(name, 1)[1:] != _params_of(name, 2)[1:]  # past the first (drawn at random by every sampler)


def test_sampler_options_are_checked():
    with pytest.raises(ConfigError, match=r"optimizer.sampler_options.n_startup: not an option of TPESampler "
                                          r"\(did you mean 'n_startup_trials'\?"):
        make_sampler("tpe", {"n_startup": 3}, None, space().distributions())
    # a value of the right type that optuna only checks when sampling: caught by a probe ask
    with pytest.raises(ConfigError, match="optimizer.sampler_options: not accepted by QMCSampler: ValueError"):
        make_sampler("qmc", {"qmc_type": "nope"}, None, space().distributions())


def test_tpe_is_multivariate_by_default():
    sampler = make_sampler("tpe", {}, 0, space().distributions())
    assert sampler._multivariate


def test_resume_refusal_lists_what_differs(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    fp = {"models": {"a": "1234"}, "space": {"x": "float[0, 1]"}}
    open_study(name="s", storage=storage, sampler=optuna.samplers.RandomSampler(), fingerprint=fp)
    from sd_optim.errors import StudyMismatchError

    with pytest.raises(StudyMismatchError) as info:
        open_study(name="s", storage=storage, sampler=optuna.samplers.RandomSampler(), resume=True,
                   fingerprint={"models": {"a": "9999"}, "space": {"x": "float[0, 1]"}})
    assert info.value.differences == ['models: study has {"a": "1234"}, this run has {"a": "9999"}']
    with pytest.raises(ConfigError, match="--resume: no study named 'zzz'"):
        open_study(name="zzz", storage=storage, sampler=optuna.samplers.RandomSampler(), resume=True,
                   fingerprint=fp)


def test_empty_guide_is_an_error():
    c = config_from_dict({"models": ["a.safetensors", "b.safetensors"], "payloads": [{"prompt": "x"}],
                          "scorers": ["image_stats"]})
    with pytest.raises(SpaceError, match="guide: no parameter to tune"):
        MergePlanner(c, "sd1-ldm")
