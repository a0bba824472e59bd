"""Fetching scorer weights from a real HTTP server on a loopback port that serves files the way the
Hugging Face hub does (``/<repo>/resolve/<revision>/<file>`` answering with a redirect that carries
the file's sha256 and size) and as plain URLs: progress, resume after a cut connection, checksum
refusal, atomic placement, the token kept from other hosts, and the errors a user meets."""

from __future__ import annotations

import json

import pytest
from file_server import HF_FILE, PAYLOAD, SHA

from sd_optim.cli import main
from sd_optim.scoring.download import DownloadError, download_file, download_scorer
from sd_optim.scoring.files import WeightFile
from sd_optim.scoring.inventory import inventory


def plain_file(port: int, sha256: str = "") -> WeightFile:
    return WeightFile(option="weights", path="tiny/w.bin", about="tiny test weights",
                      url=f"http://127.0.0.1:{port}/plain/w.bin", sha256=sha256)


def test_a_hub_file_is_fetched_with_progress_checked_and_placed(server, tmp_path):
    seen = []
    path = download_file(HF_FILE, tmp_path, progress=lambda name, done, total: seen.append((name, done, total)))
    assert path == tmp_path / "tiny" / "w.safetensors" and path.read_bytes() == PAYLOAD
    assert not list(tmp_path.rglob("*.part"))
    assert seen[-1] == ("w.safetensors", len(PAYLOAD), len(PAYLOAD)) and len(seen) > 1
    assert [d for _, d, _ in seen] == sorted(d for _, d, _ in seen)
    assert [r["path"] for r in server.requests] == ["/org/tiny/resolve/main/w.safetensors", "/cdn/w.bin"]
    # there already: nothing fetched again
    assert download_file(HF_FILE, tmp_path) == path and len(server.requests) == 2


def test_a_cut_connection_is_resumed_with_a_range_request(server, tmp_path):
    server.cuts = 1
    path = download_file(HF_FILE, tmp_path)
    assert path.read_bytes() == PAYLOAD
    cdn = [r for r in server.requests if r["path"] == "/cdn/w.bin"]
    assert [r["range"] for r in cdn] == ["", f"bytes={server.cut_at}-"]


def test_a_download_cut_every_time_keeps_its_part_and_resumes_on_the_next_call(server, tmp_path):
    server.cuts, server.cut_at = 99, 1000
    with pytest.raises(DownloadError, match=r"cut at 1000 bytes.*run the same download again to resume"):
        download_file(plain_file(server.port), tmp_path)
    part = tmp_path / "tiny" / "w.bin.part"
    assert part.stat().st_size == 1000 and not (tmp_path / "tiny" / "w.bin").exists()
    server.cuts = 0
    assert download_file(plain_file(server.port), tmp_path).read_bytes() == PAYLOAD
    assert server.requests[-1]["range"] == "bytes=1000-" and not part.exists()


def test_a_file_that_does_not_match_its_checksum_is_refused_and_removed(server, tmp_path):
    server.corrupt = True  # the hub announces the sha256 of PAYLOAD
    with pytest.raises(DownloadError, match=f"is not the published file: its sha256 is .*, expected {SHA}"):
        download_file(HF_FILE, tmp_path)
    assert list(tmp_path.rglob("*")) == [tmp_path / "tiny"]  # nothing placed, no part left
    server.corrupt = False
    with pytest.raises(DownloadError, match="expected 0000"):  # a declared checksum is checked too
        download_file(plain_file(server.port, sha256="0" * 64), tmp_path)
    assert download_file(plain_file(server.port, sha256=SHA), tmp_path).read_bytes() == PAYLOAD


def test_the_token_goes_to_the_hub_only(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    download_file(HF_FILE, tmp_path)
    resolve, cdn = server.requests
    assert resolve["auth"] == "Bearer hf_secret" and cdn["auth"] == "" and cdn["host"].startswith("localhost")


def test_unreachable_offline_and_missing_files_say_what_to_do(server, tmp_path, monkeypatch):
    missing = WeightFile(option="weights", path="tiny/gone.bin", about="x", url=f"http://127.0.0.1:{server.port}/gone")
    with pytest.raises(DownloadError, match=r"gone.bin: not found at .*HTTP 404"):
        download_file(missing, tmp_path)
    server.close()
    with pytest.raises(DownloadError, match=f"could not reach 127.0.0.1:{server.port} for w.safetensors"):
        download_file(HF_FILE, tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match=r"HF_HUB_OFFLINE is set.*unset it, or place the file at"):
        download_file(HF_FILE, tmp_path)
    by_hand = WeightFile(option="weights", path="tiny/mine.bin", about="x", note="train it yourself")
    with pytest.raises(DownloadError, match="has no download source: train it yourself"):
        download_file(by_hand, tmp_path)


def test_the_scorers_command_lists_downloads_and_lists_again(tiny_scorer, tmp_path, capsys):
    assert main(["scorers", "--models-dir", str(tmp_path), "--json"]) == 0
    listed = {e["name"]: e for e in json.loads(capsys.readouterr().out.strip().splitlines()[-1])}
    entry = listed["tiny_weights"]
    assert entry["installed"] is False and entry["files"][0]["looked_for"] == [str(tmp_path / "tiny" / "w.safetensors")]
    assert listed["image_stats"]["installed"] is True and listed["image_stats"]["files"] == []
    assert "weights" in tiny_scorer({}, models_dir=tmp_path, device="cpu", backbones=None).check_ready()[0]
    assert main(["scorers", "download", "tiny_weights", "--models-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {
        "downloaded": {"tiny_weights": [str(tmp_path / "tiny" / "w.safetensors")]}}
    assert next(e for e in inventory(tmp_path) if e["name"] == "tiny_weights")["installed"] is True
    assert tiny_scorer({}, models_dir=tmp_path, device="cpu", backbones=None).check_ready() == []
    assert download_scorer("tiny_weights", tmp_path) == [tmp_path / "tiny" / "w.safetensors"]


def test_the_scorers_command_refuses_unknown_names_and_no_folder(tiny_scorer, capsys):
    assert main(["scorers", "download", "tiny_wieghts", "--models-dir", "x"]) == 2
    assert "tiny_weights" in capsys.readouterr().err  # the nearest name
    assert main(["scorers", "download", "tiny_weights", "--models-dir", ""]) == 2
    assert "models_dir: is empty" in capsys.readouterr().err


def test_bench_scorers_times_tiny_weights_and_the_shared_backbone(capsys):
    assert main(["bench", "scorers", "--scorers", "laion_aesthetic,clip_score,image_stats", "--repeats", "1",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["name"] for r in result["scorers"]] == ["laion_aesthetic", "clip_score"]
    assert all(r["load_s"] > 0 and r["batch1_s_per_image"] > 0 and r["batch8_s_per_image"] > 0 for r in result["scorers"])
    assert result["shared_backbone"]["scorers"] == ["laion_aesthetic", "clip_score"]
    assert result["shared_backbone"]["backbone_loads_shared"] == 1 and result["not_run"] == ["image_stats"]
    assert main(["bench", "scorers", "--scorers", "nope"]) == 2
    assert "--scorers: unknown scorer(s)" in capsys.readouterr().err
