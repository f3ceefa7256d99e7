"""`build --auto` and the build cache: a reachable budget is met by real builds, an impossible one exits 3 with the
closest candidate, a second identical run is served from the cache and says so."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgepack.cache import BuildCache, build_key
from edgepack.cli import cli
from edgepack.compress import FinetuneConfig, PruneConfig, parse_recipe
from edgepack.fileio import sha256_file

AUTO = ["--model", "zoo:digits-cnn", "--budget", "20KB", "--max-accuracy-drop", "3pp", "--eval", "zoo", "--auto",
        "--runs", "10", "--quiet"]


def run(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["build", *args])
    return result.exit_code, result.stdout, result.output


@pytest.fixture(scope="module")
def first_search(tmp_path_factory):
    root = tmp_path_factory.mktemp("auto")
    code, stdout, output = run([*AUTO, "--cache-dir", str(root / "cache"), "--out", str(root / "out")])
    return root, code, stdout, output


@pytest.mark.slow
def test_auto_meets_reachable_budgets_with_real_builds_and_explains(first_search):
    root, code, stdout, output = first_search
    assert code == 0, output
    out = root / "out"
    search = json.loads((out / "search.json").read_text())
    assert search["family"] == "CNN" and search["met"] is True and search["candidates"] == 7
    evaluated = {c["index"]: c for c in search["evaluated"]}
    assert evaluated[0]["label"] == "no compression" and not evaluated[0]["passed"]
    assert any("size" in miss for miss in evaluated[0]["misses"])  # the plain int8 file is 32.9 KB
    chosen = evaluated[search["chosen"]]
    assert chosen["passed"] and chosen["size_bytes"] <= 20_000 and chosen["recipe"][0].startswith("prune ratio=")
    assert len(evaluated) < search["candidates"]  # the walk skipped what the measurements ruled out
    assert search["steps"][0].startswith("the plain build misses size")
    assert search["pareto"] and search["chosen"] in search["pareto"]
    passes = parse_recipe(out / "recipe.yaml")
    assert [type(p) for p in passes] == [PruneConfig, FinetuneConfig]
    # the build in --out is the chosen candidate's, as if built there: its report, manifest and files agree
    report = json.loads((out / "report.json").read_text())
    assert report["out_dir"] == str(out) and all(v["passed"] for v in report["verdicts"])
    assert [p["name"] for p in report["model"]["passes"]] == ["prune", "finetune"]
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["artifacts"]:
        assert sha256_file(out / entry["file"]) == entry["sha256"]
    assert not [p for p in out.parent.iterdir() if ".auto-" in p.name]  # the scratch directory is gone
    assert f"auto: {len(evaluated)} of 7 candidates built (CNN)" in stdout and "why: " in stdout


@pytest.mark.slow
def test_a_second_identical_search_is_served_from_the_cache(first_search):
    root, code, _, output = first_search
    assert code == 0, output
    code, stdout, output = run([*AUTO, "--cache-dir", str(root / "cache"), "--out", str(root / "again")])
    assert code == 0, output
    search = json.loads((root / "again" / "search.json").read_text())
    first = json.loads((root / "out" / "search.json").read_text())
    assert [c["index"] for c in search["evaluated"]] == [c["index"] for c in first["evaluated"]]
    assert all(c["cached"] for c in search["evaluated"])
    # the figures are the first run's, and say when they were measured
    assert [c["measured_at"] for c in search["evaluated"]] == [c["measured_at"] for c in first["evaluated"]]
    assert f"{len(search['evaluated'])} from the cache" in stdout and "served from the cache: measured" in stdout
    assert search["seconds"] < first["seconds"] / 3, (search["seconds"], first["seconds"])
    assert (root / "again" / "report.json").is_file() and (root / "again" / "digits-cnn-int8.onnx").is_file()


@pytest.fixture()
def local_ray():
    """A local Ray instance, started by the executor as a user's run would, and shut down after the test."""
    import ray  # the `ray` extra, part of `all`

    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_the_ray_executor_returns_the_same_records_as_the_local_one(first_search, local_ray):
    root, code, _, output = first_search
    assert code == 0, output
    code, stdout, output = run([*AUTO, "--no-cache", "--executor", "ray", "--out", str(root / "ray")])
    assert code == 0, output
    local = json.loads((root / "out" / "search.json").read_text())
    remote = json.loads((root / "ray" / "search.json").read_text())
    assert remote["executor"] == "ray (local instance)" and local["executor"] == "local"
    same = ("index", "label", "recipe", "passed", "failed_metrics", "shipped", "size_bytes", "cached")
    assert [{k: c[k] for k in same} for c in remote["evaluated"]] == [{k: c[k] for k in same}
                                                                     for c in local["evaluated"]]
    for a, b in zip(remote["evaluated"], local["evaluated"]):
        assert a["accuracy"] == pytest.approx(b["accuracy"], abs=0.01)
    assert remote["chosen"] == local["chosen"] and remote["steps"] == local["steps"]
    # the files came back from the tasks and describe themselves
    manifest = json.loads((root / "ray" / "manifest.json").read_text())
    assert all(sha256_file(root / "ray" / e["file"]) == e["sha256"] for e in manifest["artifacts"])
    assert "on ray (local instance)" in stdout


@pytest.mark.slow
def test_impossible_budgets_exit_3_with_the_closest_candidate(tmp_path):
    code, stdout, output = run(["--model", "zoo:digits-cnn", "--budget", "1KB", "--auto", "--runs", "5", "--quiet",
                                "--no-cache", "--out", str(tmp_path / "out")])
    assert code == 3, output
    search = json.loads((tmp_path / "out" / "search.json").read_text())
    assert search["met"] is False
    closest = next(c for c in search["evaluated"] if c["index"] == search["chosen"])
    assert closest["misses"] and closest["misses"][0].startswith("size: ")
    assert "closest (exit 3): candidate" in stdout
    assert "budget failed: size" in output and (tmp_path / "out" / "report.json").is_file()


@pytest.mark.slow
def test_a_plain_build_with_a_cache_dir_is_reused_and_says_so(tmp_path):
    args = ["--model", "zoo:digits-cnn", "--budget", "1MB", "--runs", "5", "--quiet", "--cache-dir",
            str(tmp_path / "cache")]
    code, stdout, output = run([*args, "--out", str(tmp_path / "a")])
    assert code == 0, output and "served from the cache" not in stdout
    code, stdout, output = run([*args, "--out", str(tmp_path / "b")])
    assert code == 0, output
    assert "served from the cache: built and measured" in stdout
    for name in ("digits-cnn-fp32.onnx", "digits-cnn-int8.onnx"):
        assert sha256_file(tmp_path / "a" / name) == sha256_file(tmp_path / "b" / name)
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert all(Path(a["path"]).parent == tmp_path / "b" for a in report["artifacts"])


@pytest.mark.parametrize("args,message", [
    (["--auto"], "--auto needs a budget to search for"),
    (["--auto", "--budget", "1MB", "--prune", "0.5"], "--auto chooses the compression itself"),
    (["--budget", "1MB", "--no-cache", "--cache-dir", "x"], "--no-cache and --cache-dir contradict each other"),
    (["--budget", "1MB", "--executor", "ray"], "--executor ray runs the candidates of --auto"),
    (["--budget", "1MB", "--auto", "--executor", "dask"], "--executor 'dask': use local, ray"),
])
def test_bad_auto_input_is_one_line_and_exit_2(args, message, tmp_path):
    code, _, output = run(["--model", "zoo:digits-cnn", *args, "--out", str(tmp_path / "out")])
    assert code == 2, output
    (line,) = [ln for ln in output.splitlines() if ln.startswith("edgepack: error:")]
    assert message in line


def test_a_cache_directory_that_cannot_be_written_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, output = run(["--model", "zoo:digits-cnn", "--budget", "1MB", "--auto", "--cache-dir",
                           str(blocker / "cache"), "--out", str(tmp_path / "out")])
    assert code == 2, output
    assert f"cache directory {blocker / 'cache'} is not writable" in output


def test_the_cache_keeps_complete_entries_and_drops_the_least_recently_used(tmp_path):
    cache = BuildCache.open(tmp_path / "cache", max_bytes=2500)
    builds = []
    for i in range(3):
        build = tmp_path / f"build{i}"
        build.mkdir()
        (build / "report.json").write_text("{}")
        (build / "model.onnx").write_bytes(b"x" * 1000)
        builds.append(build)
    keys = [build_key({"build": i}) for i in range(3)]
    assert len(set(keys)) == 3 and keys[0] == build_key({"build": 0})
    cache.store(keys[0], builds[0])
    cache.store(keys[1], builds[1])
    os.utime(cache.root / "builds" / keys[0], (1, 1))  # entry 0 was used long ago
    os.utime(cache.root / "builds" / keys[1], (2, 2))
    assert cache.lookup(keys[0]) is not None  # a lookup marks it as just used
    cache.store(keys[2], builds[2])  # over the bound: the least recently used (entry 1) goes
    assert cache.lookup(keys[1]) is None
    assert cache.lookup(keys[0]) is not None and cache.lookup(keys[2]) is not None
    (cache.root / "builds" / "incomplete").mkdir()  # no report.json: never served
    assert cache.lookup("incomplete") is None
