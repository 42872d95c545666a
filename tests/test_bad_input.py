"""Bad input tried as a new user would (issues 15 and 24): each case fails with one clear line, or is accepted
with the meaning a user expects, instead of a traceback or a silent wrong answer."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from find3d.cli import main
from find3d.errors import ConfigError, DataError, InputError
from find3d.field.embeddings import STORE_DIRNAME, EmbeddingStore, embed_frames, scene_frames

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


# ------------------------------------------------------------------------------- embed-frames resume
@dataclass
class Embedding:
    features: np.ndarray
    image_vector: np.ndarray


class Embedder:
    """Pooled RGB through a fixed random projection; ``fingerprint`` names the projection (the 'weights')."""

    def __init__(self, seed: int, fail_after: int | None = None) -> None:
        self.fingerprint = f"model-{seed}"
        self.projection = np.random.default_rng(seed).normal(size=(3, 8)).astype(np.float32)
        self.calls, self.fail_after = 0, fail_after

    def embed_pixels(self, image: np.ndarray) -> Embedding:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt  # the user stops the run
        h, w = image.shape[0] // 4, image.shape[1] // 4
        pooled = image[: h * 4, : w * 4].reshape(h, 4, w, 4, 3).mean(axis=(1, 3)) / 255.0 @ self.projection
        return Embedding(pooled, pooled.mean(axis=(0, 1)))


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from find3d.data.make_scene import make_scene

    scene = tmp_path_factory.mktemp("bad_input") / "scene"
    make_scene(scene, seed=0, views=6, heldout=0, size=64)
    return scene


def _copy_scene(scene: Path, to: Path) -> Path:
    shutil.copytree(scene, to, ignore=shutil.ignore_patterns(STORE_DIRNAME))
    return to


def test_resume_is_decided_by_the_model_content_not_the_checkpoint_path(small_scene: Path, tmp_path: Path) -> None:
    scene = _copy_scene(small_scene, tmp_path / "scene")
    total = len(scene_frames(scene))
    with pytest.raises(KeyboardInterrupt):
        embed_frames(scene, Embedder(1, fail_after=3), checkpoint="last.pt", commit_every=2)
    # The checkpoint at the same path moved on: a different model must not resume the old rows.
    newer = Embedder(2)
    store = embed_frames(scene, newer, checkpoint="last.pt", commit_every=2)
    assert newer.calls == total and store.written == total
    assert "different model" in store.replaced and "model-1" in store.replaced
    image = np.asarray(Image.open(scene / scene_frames(scene)[0]["file_path"]).convert("RGB"))
    np.testing.assert_allclose(store.frame_features(0), Embedder(2).embed_pixels(image).features, atol=2e-3)
    # A complete store is refreshed when the model changed ...
    third = Embedder(3)
    assert embed_frames(scene, third, checkpoint="last.pt").written == total and third.calls == total
    # ... and kept (0 frames embedded now) when only the path of the same weights changed.
    same = Embedder(3)
    kept = embed_frames(scene, same, checkpoint="copy.pt")
    assert same.calls == 0 and kept.written == 0 and kept.replaced is None
    assert EmbeddingStore.open(scene / STORE_DIRNAME).meta.checkpoint == "copy.pt"
    assert json.loads((scene / STORE_DIRNAME / "meta.json").read_text())["model"] == "model-3"


def test_embed_frames_cli_counts_and_names_a_changed_checkpoint(small_scene: Path, tiny_checkpoint: Path,
                                                               tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import torch

    scene = _copy_scene(small_scene, tmp_path / "scene")
    total = len(scene_frames(scene))
    checkpoint = tmp_path / "last.pt"
    shutil.copy(tiny_checkpoint, checkpoint)
    argv = ["embed-frames", "--data", str(scene), "--checkpoint", str(checkpoint)]
    assert main(argv) == 0
    assert f"{total} of {total} frames embedded now" in capsys.readouterr().out
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"0 of {total} frames embedded now ({total} already embedded by the same model" in out
    # Training goes on and writes new weights to the same path.
    state = torch.load(checkpoint, weights_only=False)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = state["model"][name] + 0.5
    torch.save(state, checkpoint)
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "re-embedded every frame" in captured.err and "different model" in captured.err
    assert f"{total} of {total} frames embedded now" in captured.out


# ------------------------------------------------------------------------- one string is one item
def test_one_string_is_one_item_in_the_shared_validator() -> None:
    from find3d import validate

    assert validate.strings("object", "negatives") == ["object"]
    assert validate.strings(("a", "b"), "negatives") == ["a", "b"]
    assert validate.strings([], "negatives", allow_empty=True) == []
    for bad in (b"object", 3, None, [""], ["a", 1]):
        with pytest.raises(InputError, match="negatives"):
            validate.strings(bad, "negatives")


def test_one_string_is_one_item_in_configs_and_eval(tiny_dataset: Path) -> None:
    from find3d.config import load_config
    from find3d.evaluation.run_eval import eval_dataset, resolve_tasks
    from find3d.train.config import TrainInterfaceConfig

    assert load_config(TrainInterfaceConfig, None, ["tasks=generic"]).tasks == ["generic"]
    dataset = eval_dataset(tiny_dataset, "val", 64, None)
    assert resolve_tasks(dataset, range(len(dataset)), "generic") == (["generic"], [])


@pytest.fixture(scope="module")
def interface(tiny_checkpoint: Path):
    import find3d

    return find3d.Interface.from_checkpoint(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def field(interface, tmp_path_factory: pytest.TempPathFactory):
    """A small export in the tiny interface's space: points carrying its embeddings of three words."""
    from find3d.field.export import write_export
    from find3d.query import Field

    words = [interface.encode_query(w).numpy() for w in ("table", "duck", "wall")]
    features = np.repeat(np.stack(words), 4, axis=0) + np.random.default_rng(0).normal(0, 0.05, (12, interface.dim))
    xyz = np.random.default_rng(1).uniform(-0.5, 0.5, (12, 3)).astype(np.float32)
    frame = {"file_path": "images/a.png", "c2w": np.eye(4).tolist(), "fl_x": 50.0, "fl_y": 50.0,
             "cx": 32.0, "cy": 24.0, "w": 64, "h": 48}
    root = tmp_path_factory.mktemp("field") / "export"
    write_export(root, xyz, np.full((12, 3), 0.5, np.float32), features.astype(np.float32),
                 words[0][None], [frame], code_dim=4)
    return Field.load(root)


def test_one_string_is_one_item_in_the_python_api(interface, field) -> None:
    one = field.query("table", negatives="object", interface=interface, top_k_frames=0)
    listed = field.query("table", negatives=["object"], interface=interface, top_k_frames=0)
    np.testing.assert_array_equal(one.relevancy, listed.relevancy)
    segmented = interface.segment(np.zeros((32, 32, 3), np.uint8), classes="table")
    assert segmented.class_names == ["table"]
    assert interface.model.language("a red mug").tokens.shape[0] == 1


# ------------------------------------------------------------------------ Python API argument types
def test_api_arguments_raise_input_error_naming_the_argument(interface, field) -> None:
    import find3d

    for bad in (None, 42):
        with pytest.raises(InputError, match="checkpoint"):
            find3d.Interface.from_checkpoint(bad)
    with pytest.raises(InputError, match="interface="):
        field.query("the table")
    with pytest.raises(InputError, match="interface="):
        field.query(np.ones(field.dim), negatives="object")
    with pytest.raises(InputError, match=r"threshold: got str '0\.5'; pass a number in \[0\.0, 1\.0\]"):
        field.query(np.ones(field.dim), threshold="0.5")
    with pytest.raises(InputError, match="top_k_frames"):
        field.query(np.ones(field.dim), top_k_frames=-3)
    with pytest.raises(InputError, match="threshold"):
        interface.segment(np.zeros((32, 32, 3), np.uint8), threshold="0.5")


def test_a_long_query_says_what_is_truncated(interface) -> None:
    from find3d.errors import Find3dWarning

    with pytest.warns(Find3dWarning, match=r"text of 100\d\d characters.*only the first \d+ characters .* are ignored"):
        interface.encode_query("the table " * 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Find3dWarning)
        interface.encode_query("the table")  # short: nothing to say


def test_field_load_names_missing_files(field, tmp_path: Path) -> None:
    from find3d.query import Field

    with pytest.raises(DataError, match=r"field folder .* not found; pass the --out folder") as missing:
        Field.load(tmp_path / "nowhere")
    assert "dataset" not in str(missing.value)
    broken = tmp_path / "export"
    shutil.copytree(field.root, broken)
    (broken / "decoder.npz").unlink()
    with pytest.raises(DataError, match=r"decoder\.npz: file not found; re-run `find3d export-field"):
        Field.load(broken)
    assert main(["query", "--field", str(broken), "--checkpoint", str(broken), "table"]) == 2


# ---------------------------------------------------------------------------------- check-data
def test_check_data_decodes_every_image_and_names_a_missing_folder(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    from fixtures.tiny_coco import write_tiny_dataset

    from find3d.data.check import check_data

    root = write_tiny_dataset(tmp_path / "tiny").root
    assert check_data(root) == []
    (root / "val2017/000000000001.jpg").write_bytes(os.urandom(2048))  # random bytes named .jpg
    problems = check_data(root)
    assert len(problems) == 1 and "cannot be decoded" in problems[0].message and "image_id 1" in str(problems[0])
    assert main(["check-data", str(root)]) == 1
    (problem,) = check_data(tmp_path / "no-such-dataset")
    assert "does not exist" in problem.message
    assert main(["check-data", str(tmp_path / "no-such-dataset")]) == 1
    assert "does not exist" in capsys.readouterr().out


# ----------------------------------------------------------------------------- train-interface
@pytest.mark.parametrize(("override", "fragment"), [
    ("max_steps=-5", "max_steps: -5 is out of range; it must be >= 1"),
    ("max_steps=0", "max_steps: 0 is out of range"),
    ("batch_size=0", "batch_size: 0 is out of range"),
    ("interface.num_heads=5", "num_heads 5 does not divide hidden_dim 128"),
])
def test_train_config_is_validated_up_front(override: str, fragment: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    argv = ["train-interface", "--config", "configs/interface/demo.yaml", f"output_dir={out}", override]
    assert main(argv) == 2
    err = capsys.readouterr().err
    # One line naming the override (not the YAML file) as the source, and no run folder written.
    assert err.count("\n") == 1 and fragment in err
    assert err.startswith(f"find3d train-interface: error: override {override} (on top of config ")
    assert not out.exists()


def test_config_errors_name_their_source(tmp_path: Path) -> None:
    from find3d.config import load_config
    from find3d.train.config import TrainInterfaceConfig

    path = tmp_path / "c.yaml"
    path.write_text("max_steps: 0\n")
    with pytest.raises(ConfigError, match=rf"^config {path}: max_steps: 0 is out of range"):
        load_config(TrainInterfaceConfig, path, ["batch_size=2"])
    with pytest.raises(ConfigError, match=r"^override interface.num_heads=x \(on top of config .*\): "
                                          r"interface.num_heads: expected an integer"):
        load_config(TrainInterfaceConfig, path, ["max_steps=3", "interface.num_heads=x"])
    with pytest.raises(ConfigError, match=r"e\.g\. max_steps=200") as hint:
        load_config(TrainInterfaceConfig, None, ["max_steps"])
    assert "train." not in str(hint.value)


def test_resume_with_nothing_to_resume_says_so(tiny_dataset: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    from conftest import TINY_TRAIN_OVERRIDES

    out = tmp_path / "run"
    overrides = [f"data={tiny_dataset}", f"output_dir={out}", *TINY_TRAIN_OVERRIDES, "max_steps=1"]
    assert main(["train-interface", "--resume", *overrides]) == 0
    assert f"--resume: no checkpoint in {out / 'checkpoints'} yet; starting from step 0" in capsys.readouterr().err
    (out / "checkpoints" / "step_00000001.pt").write_bytes(b"not a checkpoint")
    assert main(["train-interface", "--resume", *overrides]) == 2
    assert "delete it and --resume again" in capsys.readouterr().err


def test_corrupt_checkpoint_in_eval_does_not_suggest_resuming(tiny_dataset: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"\0" * 64)
    assert main(["eval", "--checkpoint", str(broken), "--data", str(tiny_dataset)]) == 2
    err = capsys.readouterr().err
    assert "corrupt" in err and "resume" not in err and "earlier step_*.pt" in err


def test_eval_on_a_cuda_device_this_torch_cannot_use(tiny_checkpoint: Path, tiny_dataset: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    argv = ["eval", "--checkpoint", str(tiny_checkpoint), "--data", str(tiny_dataset), "--device", "cuda:99"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "device: 'cuda:99'" in err and "CUDA" in err


# ---------------------------------------------------------------------------- CLI value checks
@pytest.mark.parametrize("argv", [
    ["export-field", "--config", "x.yml", "--out", "x", "--code-dim", "-1"],
    ["query", "--field", "x", "--top-k", "-3", "mug"],
    ["query", "--field", "x", "--threshold", "1.5", "mug"],
    ["embed-frames", "--data", "x", "--checkpoint", "y", "--code-dim", "-1"],
    ["eval", "--checkpoint", "x", "--data", "y", "--batch-size", "0"],
    ["demo", "--field-iterations", "-1"],
    ["demo", "--images", "1"],
])
def test_bad_numbers_are_argparse_errors(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "pass an integer >=" in err or "pass a number in" in err


def test_export_field_refuses_what_is_not_a_find_field_run(tiny_checkpoint: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    interface_yaml = tiny_checkpoint.parent.parent / "config.yaml"
    assert main(["export-field", "--config", str(interface_yaml), "--out", str(tmp_path / "x")]) == 2
    assert "not a nerfstudio run config" in capsys.readouterr().err
    broken = tmp_path / "config.yml"
    broken.write_text("a: [1\n")
    assert main(["export-field", "--config", str(broken), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ParserError" in err and "ns-train find-field" in err


def test_demo_validates_every_argument_before_any_stage(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from find3d.demo import demo

    bad = tmp_path / "heads.yaml"
    bad.write_text("interface:\n  num_heads: 5\n")
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--config", str(bad)]) == 2
    assert "num_heads 5 does not divide" in capsys.readouterr().err
    with pytest.raises(InputError, match="field_iterations"):
        demo(out, field_iterations=-1)
    with pytest.raises(InputError, match="seed"):
        demo(out, seed=-1)
    assert not out.exists()  # nothing was written


# ------------------------------------------------------------------------------------ console noise
def test_pybullet_banner_is_not_printed() -> None:
    code = "from find3d.data.engine.scene import SceneBuilder; SceneBuilder(); print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n" and "pybullet build time" not in done.stderr


def test_library_filters_leave_other_warnings_alone() -> None:
    from find3d.compat.quiet import filter_library_warnings, loader_workers, usable_cpus

    filter_library_warnings()
    message = "Using a non-tuple sequence for multidimensional indexing is deprecated"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        filter_library_warnings()
        warnings.warn_explicit(message, UserWarning, "cameras.py", 1, module="nerfstudio.cameras.cameras")
        warnings.warn_explicit(message, UserWarning, "mine.py", 1, module="find3d.mine")
        warnings.warn_explicit("a real problem", UserWarning, "cameras.py", 2, module="nerfstudio.cameras.cameras")
    assert [(str(w.message), w.filename) for w in caught] == [(message, "mine.py"), ("a real problem", "cameras.py")]
    assert 1 <= loader_workers(64) == usable_cpus() <= (os.cpu_count() or 1)
    assert loader_workers(0) == 0


# ------------------------------------------------------------------- nerfstudio: ns-train, paths, render
def _run(argv: list[str], cwd: Path, timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=ENV)


@pytest.mark.slow
def test_ns_train_on_an_incomplete_store_is_one_line(pipeline: dict[str, Path], tmp_path: Path) -> None:
    scene = tmp_path / "scene"
    shutil.copytree(pipeline["scene"], scene)
    done = np.load(scene / STORE_DIRNAME / "done.npy")
    done[2:] = False
    np.save(scene / STORE_DIRNAME / "done.npy", done)
    result = _run([str(BIN / "ns-train"), "find-field", "--data", str(scene), "--max-num-iterations", "2",
                   "--vis", "tensorboard", "--output-dir", str(tmp_path / "runs")], tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"ns-train find-field: error: {scene / STORE_DIRNAME}: {len(done) - 2} of {len(done)} frames have no "
        "embeddings yet; run `find3d embed-frames --data SCENE` (it resumes where it stopped)."]


@pytest.mark.slow
def test_a_run_trained_with_relative_paths_works_from_any_directory(pipeline: dict[str, Path], tmp_path: Path,
                                                                    ) -> None:
    """ns-train from the scene's parent with relative paths; export-field and the README's ns-render
    command from another directory. The training output carries no library noise."""
    import re

    import yaml

    work = tmp_path / "work"
    shutil.copytree(pipeline["scene"], work / "scene")
    trained = _run([str(BIN / "ns-train"), "find-field", "--data", "scene", "--max-num-iterations", "4",
                    "--vis", "tensorboard", "--output-dir", "runs",
                    "--pipeline.datamanager.train-num-rays-per-batch", "256"], work)
    assert trained.returncode == 0, trained.stderr[-3000:]
    for noise in ("worker processes", "FutureWarning", "non-tuple sequence", "requires_grad=True to a scalar"):
        assert noise not in trained.stderr, trained.stderr[-3000:]
    (config,) = (work / "runs").glob("scene/find-field/*/config.yml")
    stored = yaml.load(config.read_text(), Loader=yaml.Loader)  # nerfstudio's python-tagged YAML
    datamanager = stored.pipeline.datamanager
    assert stored.output_dir == work / "runs" and datamanager.data == work / "scene"
    assert datamanager.dataparser.data == work / "scene"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    exported = _run([str(BIN / "find3d"), "export-field", "--config", str(config), "--out", "export",
                     "--num-points", "500", "--min-accumulation", "0"], elsewhere)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert json.loads((elsewhere / "export" / "meta.json").read_text())["count"] > 0

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    (command,) = re.findall(r"^(ns-render interpolate .*)$", readme, flags=re.MULTILINE)
    argv = command.split()
    argv[argv.index("--load-config") + 1] = str(config)
    argv[argv.index("--output-path") + 1] = "renders"
    rendered = _run([str(BIN / argv[0]), *argv[1:], "--downscale-factor", "4", "--interpolation-steps", "1"],
                    elsewhere)
    assert rendered.returncode == 0, rendered.stdout[-2000:] + rendered.stderr[-2000:]
    assert list((elsewhere / "renders").glob("*.jpg"))


# ============================================================================ second sweep (issue 24)
# ------------------------------------------------------------------------------- data loss: export-field
def _export(config: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "find3d"), "export-field", "--config", str(config), "--out", str(out)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_mid_write(config: Path, out: Path) -> Path:
    """Run export-field into ``out`` and SIGKILL it as soon as it has written a features.f16 (as the issue did;
    wherever it writes it); returns the staging folder it was writing in, if any, checked to be incomplete."""
    import signal
    import time

    started = time.time_ns()
    process = _export(config, out)
    staging = out.with_name(f".{out.name}.tmp-{process.pid}")
    deadline = time.monotonic() + 300
    while not any(path.is_file() and path.stat().st_mtime_ns > started
                  for path in (staging / "features.f16", out / "features.f16")):
        assert process.poll() is None, f"export-field ended before it was killed: {process.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "export-field never wrote features.f16"
        time.sleep(0.0005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (staging / "meta.json").exists()  # killed mid-write, not after
    return staging


def _answer(field_dir: Path, interface) -> tuple[np.ndarray, np.ndarray]:
    from find3d.query import Field

    result = Field.load(field_dir).query("the mug", interface=interface, top_k_frames=2)
    return result.relevancy, np.array([hit.index for hit in result.frames])


def _snapshot(folder: Path) -> dict[str, bytes]:
    # Recursive: eval-3d may have written its fusion baseline into the field folder.
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


@pytest.mark.slow
def test_a_killed_export_leaves_the_old_field_whole_or_no_field(pipeline: dict[str, Path], interface,
                                                               tmp_path: Path) -> None:
    from find3d.field.export import write_export
    from find3d.query import Field

    config = next((pipeline["root"] / "runs").glob("*/find-field/*/config.yml"))
    old = tmp_path / "field"
    shutil.copytree(pipeline["field"], old)
    (old / "notes.txt").write_text("the user's own file")
    files = _snapshot(old)
    relevancy, frames = _answer(old, interface)
    # Re-export into the existing field, killed after features.f16 was written: the old field is untouched.
    _kill_mid_write(config, old)
    assert _snapshot(old) == files
    after, after_frames = _answer(old, interface)
    np.testing.assert_array_equal(after, relevancy)
    np.testing.assert_array_equal(after_frames, frames)
    # Into a new folder: no field at all, not a half one.
    new = tmp_path / "new"
    leftover = _kill_mid_write(config, new)
    assert not new.exists()
    with pytest.raises(DataError, match="not found"):
        Field.load(new)
    # The next export there removes the killed run's staging folder; a complete one replaces the old field
    # whole and keeps what else the folder holds.
    field = Field.load(old)
    write_export(new, field.points, field.colors, np.asarray(field.features, np.float32),
                 np.asarray(field.image_vectors, np.float32), field.frames, code_dim=4)
    assert not leftover.exists() and len(Field.load(new)) == len(field)
    write_export(old, field.points[:50], field.colors[:50], np.asarray(field.features[:50], np.float32),
                 np.asarray(field.image_vectors, np.float32), field.frames, code_dim=4)
    assert len(Field.load(old)) == 50 and (old / "notes.txt").read_text() == "the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["field", "new"]  # no staging folder left


def test_export_refuses_a_folder_that_is_not_an_export(small_scene: Path, tmp_path: Path) -> None:
    from find3d.field.export import write_export

    scene = _copy_scene(small_scene, tmp_path / "scene")
    before = sorted(p.name for p in scene.iterdir())
    frame = {"file_path": "images/a.png", "c2w": np.eye(4).tolist(), "fl_x": 50.0, "fl_y": 50.0,
             "cx": 32.0, "cy": 24.0, "w": 64, "h": 48}
    with pytest.raises(InputError, match=r"holds files but no field export .*pass a new or empty folder"):
        write_export(scene, np.zeros((3, 3), np.float32), np.zeros((3, 3), np.float32), np.eye(3, 8, dtype=np.float32),
                     np.ones((1, 8), np.float32), [frame], code_dim=0)
    assert sorted(p.name for p in scene.iterdir()) == before


# ------------------------------------------------------------------------------ silent wrong answers
@pytest.fixture(scope="module")
def packaged():
    import find3d
    from find3d.demo import PACKAGED_INTERFACE

    return find3d.Interface.from_checkpoint(PACKAGED_INTERFACE, device="cpu")


def test_a_long_query_answers_what_it_reads(packaged, tmp_path: Path) -> None:
    """"mug " * 450 (1813 characters with the class prompt, 457 tokens) answered the robot: all-MiniLM-L6-v2 was
    trained on at most 256 word pieces, and the interface read its drifting tokens past that as "robot"."""
    from find3d.errors import Find3dWarning
    from find3d.field.export import write_export
    from find3d.query import Field
    from find3d.query.field import encode, nearest_class

    names = ("mug", "robot", "cube", "table")
    vectors = packaged.vocabulary_vectors()[[packaged.class_names.index(n) for n in names]]
    xyz = np.random.default_rng(0).uniform(-0.5, 0.5, (4 * len(names), 3)).astype(np.float32)
    frame = {"file_path": "images/a.png", "c2w": np.eye(4).tolist(), "fl_x": 50.0, "fl_y": 50.0,
             "cx": 32.0, "cy": 24.0, "w": 64, "h": 48}
    write_export(tmp_path / "field", xyz, np.full_like(xyz, 0.5), np.repeat(vectors, 4, axis=0), vectors[:1], [frame],
                 code_dim=0)
    field = Field.load(tmp_path / "field")

    def selected(text: str) -> list[str]:
        indices = field.query(text, interface=packaged, objects=False, top_k_frames=0).indices
        return sorted({names[i // 4] for i in indices})

    def read_as(text: str) -> str:  # the vocabulary class the interface reads the text as
        return nearest_class(packaged, encode(packaged, text))

    assert selected("mug") == ["mug"]
    with pytest.warns(Find3dWarning) as caught:
        # Read as the mug; the robot is never answered. (Its cosine with "mug" is 0.76, too far from the class
        # to count as it, so nothing passes for it either: vocabulary_negatives.)
        assert read_as("mug " * 450) == "mug" and "robot" not in selected("mug " * 450)
    (message,) = [str(w.message) for w in caught[:1]]
    kept, ignored = (int(n) for n in re.search(r"only the first (\d+) characters .* the remaining (\d+) are ignored",
                                               message).groups())
    assert "text of 1813 characters" in message and "(256 tokens)" in message
    assert kept + ignored == 1813 and 0 < kept < 1813
    with warnings.catch_warnings():
        warnings.simplefilter("error", Find3dWarning)
        assert read_as("mug " * 200) == "mug"  # 813 characters, 207 tokens: read whole, nothing to say


def test_a_nan_pose_is_refused_where_the_scene_is_read(small_scene: Path, tmp_path: Path) -> None:
    scene = _copy_scene(small_scene, tmp_path / "scene")
    meta = json.loads((scene / "transforms.json").read_text())
    meta["frames"][2]["transform_matrix"][1][3] = float("nan")
    (scene / "transforms.json").write_text(json.dumps(meta))
    name = meta["frames"][2]["file_path"]
    expected = rf"transforms\.json: frames\[2\] \({name}\) has a transform_matrix with NaN or infinite entries"
    with pytest.raises(DataError, match=expected):
        embed_frames(scene, Embedder(1))
    assert not (scene / STORE_DIRNAME).exists()


@pytest.mark.slow
def test_ns_train_refuses_a_nan_pose(pipeline: dict[str, Path], tmp_path: Path) -> None:
    scene = tmp_path / "scene"
    shutil.copytree(pipeline["scene"], scene)  # embedded: only the pose is wrong
    meta = json.loads((scene / "transforms.json").read_text())
    meta["frames"][2]["transform_matrix"][0][3] = float("inf")
    (scene / "transforms.json").write_text(json.dumps(meta))
    result = _run([str(BIN / "ns-train"), "find-field", "--data", str(scene), "--max-num-iterations", "1",
                   "--vis", "tensorboard", "--output-dir", str(tmp_path / "runs")], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("ns-train find-field: error: ") and f"frames[2] ({meta['frames'][2]['file_path']})" in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_images_are_refused_by_every_interface_method(interface, value: float) -> None:
    image = np.full((32, 32, 3), 0.5, np.float32)
    image[3, 4, 1] = value
    calls = {"ground": lambda: interface.ground(image, "robot"), "segment": lambda: interface.segment(image),
             "interact": lambda: interface.interact(image, points=[(5, 5)]),
             "embed_pixels": lambda: interface.embed_pixels(image), "embed_image": lambda: interface.embed_image(image),
             "encode_query": lambda: interface.encode_query(image),
             "retrieve": lambda: interface.retrieve([image], "a robot")}
    for name, call in calls.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # not even a numpy cast warning on the way
            with pytest.raises(InputError, match=r"1 of 3072 values are NaN or infinite; pass finite values"):
                call()
        assert name  # (named for the failure report)


# ----------------------------------------------------------------------------------------- tracebacks
def test_query_checks_out_before_the_work(field, tiny_checkpoint: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    argv = ["query", "--field", str(field.root), "--checkpoint", str(tiny_checkpoint), "table"]
    assert main([*argv, "--out", str(taken)]) == 2
    assert capsys.readouterr().err == (f"find3d query: error: --out {taken}: is a file; pass a folder for mask.ply, "
                                       "query.npz, frames.json and the PNGs.\n")
    assert main([*argv, "--out", "/sys/find3d-test/out"]) == 2  # a folder no one may write into, root included
    err = capsys.readouterr().err
    assert err.startswith("find3d query: error: --out /sys/find3d-test/out: cannot write into /sys (")
    assert err.endswith("); pass an --out folder you can write to.\n")


@pytest.mark.parametrize("command", ["make-scene", "make-data"])
def test_a_negative_seed_is_refused_before_any_folder(command: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main([command, "--out", str(out), "--seed", "-1", "--size", "32"]) == 2
    assert capsys.readouterr().err == f"find3d {command}: error: seed: got -1; pass an integer >= 0\n"
    assert not out.exists()


# ------------------------------------------------------------------------------------ unclear messages
def test_box_errors_say_the_format_and_a_box_partly_outside_is_clipped(tmp_path: Path) -> None:
    from find3d.errors import Find3dWarning
    from find3d.interface.syntax import parse_query

    Image.fromarray(np.zeros((200, 256, 3), np.uint8)).save(tmp_path / "ref.png")
    form = r"write #box=x0,y0,x1,y1 in pixels of the 256x200 image \(left, top, right, bottom edges; x0 < x1, y0 < y1\)"
    cases = {"10,10,5,5": rf"#box=10,10,5,5 has no area \(x0 < x1 and y0 < y1 are needed\); {form}, e\.g\. "
                          r"#box=5,5,10,10$",
             "300,300,400,400": rf"#box=300,300,400,400 lies outside the 256x200 image; {form}$",
             "1,2,3": rf"#box=1,2,3 is not four numbers; {form}, e\.g\. #box=10,10,50,40$"}
    for box, expected in cases.items():
        with pytest.raises(InputError, match=expected):
            parse_query(f"the mug next to <image:ref.png#box={box}>", tmp_path)
    with pytest.warns(Find3dWarning, match=r"#box=-50,-50,100,100 reaches outside the 256x200 image; using the part "
                                           r"inside it, #box=0,0,100,100"):
        entry = parse_query("the mug next to <image:ref.png#box=-50,-50,100,100>", tmp_path)
    mask = entry.entities[0].ref.mask
    assert mask[:100, :100].all() and mask.sum() == 100 * 100


def test_query_checks_text_and_files_before_loading_the_model(field, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "ref.png")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"\0" * 64)  # loading it would fail: an error about the query proves it came first
    cases = {f"the mug next to <image:{tmp_path}/ref.png#box=10,10,5,5>": "has no area",
             f"the mug next to <image:{tmp_path}/missing.png>": "missing.png: file not found",
             "the mug next to <image:": "unbalanced '<' / '>'"}
    for text, expected in cases.items():
        assert main(["query", "--field", str(field.root), "--checkpoint", str(broken), text]) == 2
        err = capsys.readouterr().err
        assert expected in err and "broken.pt" not in err, err


def test_embed_frames_names_the_frame_of_another_size(small_scene: Path, tiny_checkpoint: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    scene = _copy_scene(small_scene, tmp_path / "scene")
    frames = scene_frames(scene)
    odd = frames[2]["file_path"]
    Image.open(scene / odd).resize((64, 53)).save(scene / odd)
    expected = (f"{scene / 'transforms.json'}: frame {odd} is 64x53 px but {frames[0]['file_path']} is 64x64; every "
                f"frame of a scene must have one size: resize {odd} (and its intrinsics) or remove it from "
                "transforms.json.")
    with pytest.raises(DataError) as raised:
        embed_frames(scene, Embedder(1))
    assert str(raised.value) == expected
    assert main(["embed-frames", "--data", str(scene), "--checkpoint", str(tiny_checkpoint)]) == 2
    assert capsys.readouterr().err == f"find3d embed-frames: error: {expected}\n"
    assert not (scene / STORE_DIRNAME).exists()


def test_eval_3d_checks_the_field_s_scene_at_once(small_scene: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    from find3d.data.make_scene import make_scene
    from find3d.field.export import scene_cameras, write_export

    other = tmp_path / "other"
    make_scene(other, seed=1, views=6, heldout=0, size=64)
    paths = tuple(f["file_path"] for f in scene_frames(other))
    field = tmp_path / "field"
    write_export(field, np.zeros((5, 3), np.float32), np.zeros((5, 3), np.float32), np.eye(5, 8, dtype=np.float32),
                 np.ones((len(paths), 8), np.float32), scene_cameras(other, paths), code_dim=0,
                 extra={"scene": str(other.resolve())})
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"\0" * 64)  # never loaded: the scene is checked first
    assert main(["eval-3d", "--scene", str(small_scene), "--field", str(field), "--checkpoint", str(broken)]) == 2
    assert capsys.readouterr().err == (
        f"find3d eval-3d: error: --field {field} was exported from scene {other.resolve()} (its meta.json), not "
        f"--scene {small_scene}; pass --scene {other.resolve()}, or the field exported from {small_scene}.\n")


def test_field_query_says_what_it_got_and_what_it_takes(interface, field) -> None:
    takes = r"pass one query: text \('the red mug'\), interleaved text .* or an image crop"
    with pytest.raises(InputError, match=rf"^query: got NoneType None; {takes} \(a pathlib\.Path, PIL image or "
                                         r"\(H, W, 3\) array\)\.$"):
        field.query(None, interface=interface)
    with pytest.raises(InputError, match=rf"^query: got list \['a', 'b'\]; {takes}.*; for several queries, call once "
                                         "per query.$"):
        field.query(["a", "b"], interface=interface)


def test_train_interface_names_a_missing_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from conftest import TINY_TRAIN_OVERRIDES

    missing = tmp_path / "no-data"
    argv = ["train-interface", f"data={missing}", f"output_dir={tmp_path / 'run'}", *TINY_TRAIN_OVERRIDES]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"find3d train-interface: error: {missing}: folder does not exist; make a dataset there with `find3d "
        f"make-data --out {missing}`, or pass a COCO-layout dataset folder (train-interface data=DIR, eval --data "
        "DIR).\n")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------ hang
@pytest.mark.slow
def test_the_readme_says_how_ns_train_exits_when_training_ends(pipeline: dict[str, Path], tmp_path: Path) -> None:
    """nerfstudio keeps serving its viewer after the last iteration; the README's script form must exit."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "--vis tensorboard" in readme
    (command,) = re.findall(r"^(ns-train find-field .*--viewer\.quit-on-train-completion True.*)$", readme,
                            flags=re.MULTILINE)
    argv = command.split()
    argv[argv.index("--data") + 1] = str(pipeline["scene"])
    argv[argv.index("--max-num-iterations") + 1] = "1"
    result = _run([str(BIN / argv[0]), *argv[1:], "--output-dir", str(tmp_path / "runs"),
                   "--viewer.websocket-host", "127.0.0.1"], tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((tmp_path / "runs").glob("*/find-field/*/nerfstudio_models/*.ckpt"))
