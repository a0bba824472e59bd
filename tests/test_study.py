"""Samplers with their options, and the trial limit a UI can change during a run."""

import optuna
import pytest

from sd_optim.config import config_from_dict
from sd_optim.errors import ConfigError, SpaceError
from sd_optim.run.study import make_sampler, open_study, startup_trials
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


class MidpointSampler(optuna.samplers.RandomSampler):
    """A sampler of the user's own (by import path ``test_study.MidpointSampler``): every float
    parameter at ``at`` of its range; takes no seed."""

    def __init__(self, at: float = 0.5, **kwargs):
        super().__init__(seed=0)
        self.at = at

    def sample_independent(self, study, trial, param_name, param_distribution):
        if isinstance(param_distribution, optuna.distributions.FloatDistribution):
            return param_distribution.low + self.at * (param_distribution.high - param_distribution.low)
        return super().sample_independent(study, trial, param_name, param_distribution)


def test_a_sampler_named_by_import_path_runs_with_its_options_and_the_seed():
    dists = {k: v for k, v in space().distributions().items()
             if not isinstance(v, optuna.distributions.CategoricalDistribution)}
    for path in ("optuna.samplers.NSGAIISampler", "optuna.samplers:NSGAIISampler"):
        runs = []
        for seed in (1, 1, 2):
            study = optuna.create_study(direction="maximize", sampler=make_sampler(path, {"population_size": 4}, seed, dists))
            for _ in range(6):
                trial = study.ask(dists)
                study.tell(trial, -sum((v - 0.3) ** 2 for v in trial.params.values()))
            runs.append([t.params for t in study.trials])
        assert runs[0] == runs[1] != runs[2]
        assert study.sampler._population_size == 4
    sampler = make_sampler("test_study.MidpointSampler", {"at": 0.25}, None, dists)
    trial = optuna.create_study(sampler=sampler).ask(dists)
    assert trial.params["clip_l.all.alpha"] == 0.25


@pytest.mark.parametrize(("path", "options", "message"), [
    ("no_such_package.samplers.Fast", {}, ("optimizer.sampler: cannot import 'no_such_package.samplers' "
                                          "(ModuleNotFoundError")),
    ("optuna.samplers.NoSuchSampler", {}, "optimizer.sampler: module 'optuna.samplers' has no 'NoSuchSampler'"),
    ("optuna.study.Study", {}, "optimizer.sampler: not an Optuna sampler (a subclass of optuna.samplers.BaseSampler)"),
    ("optuna.samplers.NSGAIISampler", {"populaton_size": 4},
     "optimizer.sampler_options.populaton_size: not an option of NSGAIISampler (did you mean 'population_size'?"),
    ("optuna.samplers.NSGAIISampler", {"population_size": 1},
     "optimizer.sampler_options: NSGAIISampler refused it: ValueError"),
])
def test_a_sampler_by_import_path_that_cannot_be_used_names_the_field(path, options, message):
    with pytest.raises(ConfigError) as e:
        make_sampler(path, options, 0, space().distributions())
    assert e.value.problems[0].startswith(message), e.value.problems


@pytest.mark.parametrize(("value", "ok"), [
    ("optuna.samplers.NSGAIISampler", True), ("my_pkg.mod:MySampler", True), ("tpe", True),
    ("tpes", False), ("os.system('x')", False), ("../evil.Sampler", False), ("a b.C", False),
])
def test_the_config_takes_a_built_in_sampler_or_an_import_path(value, ok):
    data = {"models": ["a.safetensors", "b.safetensors"], "payloads": [{"prompt": "x"}], "scorers": ["image_stats"],
            "optimizer": {"sampler": value}}
    if ok:
        assert config_from_dict(data).optimizer.sampler == value
    else:
        with pytest.raises(ConfigError, match=r"optimizer.sampler: must be one of tpe, .*or a sampler class by "
                                              r"import path"):
            config_from_dict(data)


def test_tpe_is_multivariate_by_default():
    sampler = make_sampler("tpe", {}, 0, space().distributions())
    assert sampler._multivariate


@pytest.mark.parametrize(("budget", "params", "expected"), [
    (20, 27, 4), (30, 27, 6), (50, 27, 10), (500, 27, 10), (8, 27, 3), (100, 2, 3), (100, 5, 6)])
def test_start_up_trials_are_sized_to_the_budget_and_the_parameters(budget, params, expected):
    assert startup_trials(budget, params) == expected


def test_tpe_and_gp_start_with_trials_sized_to_the_run_unless_the_options_say():
    distributions = space().distributions()
    sized = startup_trials(20, len(distributions))
    for name in ("tpe", "gp"):
        assert make_sampler(name, {}, 0, distributions, budget=20)._n_startup_trials == sized
        assert make_sampler(name, {"n_startup_trials": 7}, 0, distributions, budget=20)._n_startup_trials == 7
        assert make_sampler(name, {}, 0, distributions)._n_startup_trials == 10  # no budget: Optuna's own


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
