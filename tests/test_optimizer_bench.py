"""``bench optimizer`` (sd_optim/run/optimizer_bench.py): the samplers against a block-wise merge
whose optimum is known, on a small setting (the figures of a long run are the README's)."""

from __future__ import annotations

import json

import optuna
import pytest

from sd_optim.cli import main
from sd_optim.run.optimizer_bench import SAMPLERS, hidden_target

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_the_optimizer_benchmark_reports_every_sampler_on_a_known_optimum(capsys):
    assert main(["bench", "optimizer", "--trials", "3", "--seeds", "2", "--samplers", "random,default+median", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert result["params"] >= 20 and result["trials"] == 3 and result["seeds"] == 2 and result["optimum"] == 1.0
    assert 0.9 < result["random_median"] < 1.0  # a random merge scores close to the optimum: hence the scale
    assert set(result["samplers"]) == {"random", "default+median"}
    for figures in result["samplers"].values():
        assert figures["regret_25"] is None and figures["regret_50"] is None  # past the 3 trials
        assert 0 <= figures["regret_final"] < 2 and 0 < figures["weight_distance"] < 1 and figures["generation_s"] > 0
        assert figures["pruned"] == 0  # the median pruner prunes nothing in its first 5 trials
    assert "regret = (1 - best) / (1 - median random trial" in out[0]


@pytest.mark.slow  # the core only: make test-a1111 leaves it to make test
def test_the_confirmation_stage_is_judged_on_held_out_seeds(capsys):
    assert main(["bench", "optimizer", "--trials", "3", "--seeds", "1", "--samplers", "random,default+confirm",
                 "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    c = json.loads(out[-1])["samplers"]["default+confirm"]["confirmation"]
    assert c["top"] == 3 and c["of"] == 1  # the top 5 of 3 trials: all three
    assert set(c["truly_best_picked"]) == {"confirmed", "raw"} and all(0 <= v <= 1 for v in c["truly_best_picked"].values())
    assert all(v >= 0 for v in c["shortfall"].values())
    assert any(line.startswith("default+confirm: of the top 3, the truly best") for line in out)


def test_the_benchmarks_target_is_fixed_and_inside_the_bounds():
    names = [f"diffuser.IN{i:02d}.alpha" for i in range(12)]
    assert hidden_target(names) == hidden_target(names)
    assert all(0.1 <= v <= 0.9 for v in hidden_target(names).values())
    assert SAMPLERS["random"] == {"sampler": "random"} and "default" in SAMPLERS
    assert SAMPLERS["default+median"] == {**SAMPLERS["default"], "pruner": "median"}


def test_an_unknown_sampler_is_refused(capsys):
    assert main(["bench", "optimizer", "--samplers", "random,nope"]) == 2
    assert "--samplers: unknown nope" in capsys.readouterr().err
