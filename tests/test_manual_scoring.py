"""Rating by hand: the rating desk between a run and the tab, the manual scorer's values, their
combination with automatic scores by weight, ratings kept with the trial, Stop while waiting,
and the CLI refusing a scorer it cannot ask."""

from __future__ import annotations

import threading

import optuna
import pytest
from PIL import Image
from test_runner import assert_original, make_config

from sd_optim.errors import ConfigError
from sd_optim.run.runner import RunControl, Runner, RunOptions, run_to_end
from sd_optim.scoring import ImageToScore, ScoreContext, ScorerError, ScoringStopped, combine_trial
from sd_optim.scoring.manual import SKIP, ManualScorer, RatingDesk
from sd_optim.ui import form as fm
from sd_optim.ui.runs import Defaults, RunManager

optuna.logging.set_verbosity(optuna.logging.WARNING)


def items(n, payload="p"):
    return [ImageToScore(Image.new("RGB", (8, 8)), "x", "", i, payload, i) for i in range(n)]


def score_in_thread(desk, images, trial=0, stop=lambda: False):
    out: dict = {}

    def work():
        try:
            out["value"] = ManualScorer(None, models_dir=None, device="cpu", backbones=None).score(
                images, ScoreContext(device="cpu", should_stop=stop, ratings=desk, trial=trial))
        except Exception as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    thread = threading.Thread(target=work, daemon=True)
    asked = threading.Event()
    desk.on_change = asked.set
    thread.start()
    assert asked.wait(10)
    return thread, out


def test_ratings_one_by_one_and_a_skipped_image_takes_the_mean():
    desk = RatingDesk()
    thread, out = score_in_thread(desk, items(3))
    assert [i for i, _, _ in desk.waiting()] == [0, 1, 2]
    desk.rate(8)
    desk.rate(SKIP)
    desk.rate(6)
    thread.join(10)
    assert out["value"] == pytest.approx([0.8, 0.7, 0.6])
    with pytest.raises(ValueError, match="from 1 to 10, got 11"):
        desk.rate(11)


def test_rating_the_whole_trial_covers_its_later_prompt_sets_too():
    desk = RatingDesk()
    thread, out = score_in_thread(desk, items(2), trial=4)
    desk.rate(3)
    desk.rate_trial(9)
    thread.join(10)
    assert out["value"] == pytest.approx([0.3, 0.9])
    thread, out = score_in_thread(desk, items(1, "q"), trial=4)  # no wait: already rated
    thread.join(10)
    assert out["value"] == pytest.approx([0.9])


def test_all_skipped_fails_and_stop_ends_the_wait():
    desk = RatingDesk()
    thread, out = score_in_thread(desk, items(2))
    desk.rate(SKIP)
    desk.rate(SKIP)
    thread.join(10)
    assert isinstance(out["error"], ScorerError) and "was skipped" in str(out["error"])
    stop = threading.Event()
    thread, out = score_in_thread(desk, items(1), stop=stop.is_set)
    stop.set()
    thread.join(10)
    assert isinstance(out["error"], ScoringStopped) and desk.waiting() == []


def test_manual_and_automatic_scores_combine_by_weight():
    value, per_payload = combine_trial({"p": {"manual": [0.8, 0.6], "image_stats": [0.5, 0.5]}},
                                       {"manual": 3, "image_stats": 1}, {"p": 1}, "arithmetic", "arithmetic")
    assert value == pytest.approx((3 * 0.7 + 0.5) / 4) and per_payload == {"p": pytest.approx(0.65)}


def test_a_run_rated_by_hand_keeps_its_ratings_with_the_trials(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir,
                                                              tmp_path):
    config = make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path / "runs",
                         scorers=[{"name": "manual", "weight": 2}, "image_stats"],
                         optimizer={"trials": 2, "seed": 0, "study": "by-hand"})
    with pytest.raises(ConfigError, match="rates images by hand, which needs the Optimize Merge tab"):
        run_to_end(Runner(config, sd1_host))
    desk = RatingDesk()
    runner = Runner(config, sd1_host, RunOptions(), RunControl(ratings=desk))
    ratings = iter([7, 4])

    def rate_when_asked():
        if desk.waiting():
            desk.rate(next(ratings))

    desk.on_change = lambda: threading.Thread(target=rate_when_asked, daemon=True).start()
    final = run_to_end(runner)
    trials = runner.state.study.trials
    assert final.trials == 2 and [t.user_attrs["manual_ratings"] for t in trials] == [{"p": [7.0]}, {"p": [4.0]}]
    assert trials[0].value > trials[1].value  # weight 2 on the ratings, the same prompt and seed
    from sd_optim.ui.views import trial_rows

    assert trial_rows(runner.state.study)[-1][4].startswith("rated p 7 · diffuser.all.alpha=")


def test_stop_while_waiting_for_ratings_ends_the_run_and_restores(sd1_host, tiny_sd1_paths, tiny_sd1_config_dir,
                                                                   tmp_path):
    manager = RunManager(defaults=Defaults(output_dir=str(tmp_path / "runs")), host_for=lambda c: sd1_host)
    data = make_config(tiny_sd1_paths, tiny_sd1_config_dir, tmp_path / "runs", scorers=["manual"],
                       optimizer={"trials": 5, "seed": 0, "study": "waits"}).to_dict()
    manager.start(data)
    version = -1
    while not manager.waiting_for_ratings():
        version = manager.wait_for_change(version, 10)
    assert manager.status()["awaiting_ratings"] == 1
    manager.stop("stopped from the tab")
    status = manager.wait(60)
    assert status["state"] == "finished" and status["reason"] == "stopped from the tab"
    assert status["trials_done"] == 1 and manager.waiting_for_ratings() == []
    assert_original(sd1_host, tiny_sd1_paths[0])
    form = fm.data_to_form(data)
    assert form["scorers"] == [["manual", 1.0, ""]] and form["scorer_use"] == ["manual"]
