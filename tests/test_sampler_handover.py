"""``optimizer.max_suggest_s``: a sampler too slow to suggest (three trials in a row) hands the
rest of the run to TPE."""

import time

import optuna
from test_runner import make_config

from sd_optim.run import events as ev
from sd_optim.run.runner import Runner, RunOptions, run_to_end
from sd_optim.run.study import HANDOVER_ATTR

optuna.logging.set_verbosity(optuna.logging.WARNING)


class SlowSampler(optuna.samplers.RandomSampler):
    """Random search that takes ``delay`` seconds to suggest (as GP does after some hundred trials)."""

    def __init__(self, delay: float = 0.2, seed: int | None = None):
        super().__init__(seed=seed)
        self.delay = delay

    def before_trial(self, study, trial):
        time.sleep(self.delay)
        super().before_trial(study, trial)


def test_a_slow_sampler_hands_the_run_to_tpe_after_three_slow_suggestions(sd1_host, tiny_sd1_paths,
                                                                           tiny_sd1_config_dir, tmp_path):
    config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path,
                         optimizer={"sampler": "test_sampler_handover.SlowSampler", "sampler_options": {"delay": 0.2},
                                    "max_suggest_s": 0.1, "trials": 5, "study": "slow"})
    events = []
    runner = Runner(config, sd1_host, RunOptions())
    final = run_to_end(runner, events.append)
    (handed,) = [e for e in events if isinstance(e, ev.SamplerHandedOver)]
    assert handed.number == 3 and "suggests from trial 3 on" in handed.note
    assert handed.note.startswith("test_sampler_handover.SlowSampler took over 0.1 s to suggest 3 trials in a row")
    timings = [e.timings["suggest"] for e in events if isinstance(e, ev.TrialFinished)]
    assert all(t > 0.2 for t in timings[:3]) and all(t < 0.1 for t in timings[3:])  # TPE's are quick
    assert final.sampler_note == handed.note and final.completed == 5
    assert isinstance(runner.state.study.sampler, optuna.samplers.TPESampler)
    study = optuna.load_study(study_name="slow", storage=f"sqlite:///{tmp_path / 'slow' / 'study.db'}")
    assert study.user_attrs[HANDOVER_ATTR]["trial"] == 3


def test_no_handover_with_a_limit_of_zero_or_for_tpe(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir, tmp_path):
    config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path,
                         optimizer={"sampler": "test_sampler_handover.SlowSampler", "sampler_options": {"delay": 0.05},
                                    "max_suggest_s": 0, "trials": 4, "study": "off"})
    events = []
    final = run_to_end(Runner(config, sd1_host, RunOptions()), events.append)
    assert final.sampler_note == "" and not [e for e in events if isinstance(e, ev.SamplerHandedOver)]
    config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path,
                         optimizer={"sampler": "tpe", "max_suggest_s": 0.000001, "trials": 4, "study": "tpe"})
    assert run_to_end(Runner(config, sd1_host, RunOptions())).sampler_note == ""
