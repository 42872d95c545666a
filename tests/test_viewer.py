"""Asking the field in nerfstudio's viewer (find3d.field.viewer): the outputs, the controls' worker, Write answer,
ns-render with FIND3D_QUERY, and the whole thing as a user sees it in a real headless Chromium.

One small real field serves every test: a make-scene orbit of close views (128 px), embedded with the
packaged interface (queries must mean something), 120 iterations of `ns-train find-field`, exported next
to its runs folder (where the viewer finds it). Queried objects: "the tray" and "the robot", which the
packaged interface answers with their own instances on this scene (seed 0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from fixtures.browser import chromium, free_port, wait_until
from fixtures.field import train_field
from PIL import Image

from find3d.errors import InputError

BIN = Path(sys.executable).parent
PACKAGED = Path(__file__).resolve().parent.parent / "find3d" / "assets" / "interface-cpu.pt"
FIRST, SECOND = "the tray", "the robot"
OTHERS = ("the teddy bear", "the duck", "the soccer ball", "the toy car")  # the second query where no robot is in view
ANSWERED = ("points of", "nothing is highlighted", "error")  # what the Status says once a query is answered
MAX_RES = 96  # the viewer's render size in the browser test (its longer side): every CPU ray counts
# A highlight is right when most of it lies on the queried objects and it covers most of them (it is drawn
# from the export's points, so its border is a few pixels off the ground truth's).
MIN_PRECISION, MIN_RECALL = 0.5, 0.5


@pytest.fixture(scope="module")
def field(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """make-scene -> embed-frames (packaged interface) -> ns-train find-field -> export-field, all small."""
    import torch

    from find3d.cli import main
    from find3d.field.export import export_field

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("viewer")
    scene = root / "scene"
    assert main(["make-scene", "--out", str(scene), "--views", "10", "--heldout", "1", "--size", "128", "--close"]) == 0
    assert main(["embed-frames", "--data", str(scene), "--checkpoint", str(PACKAGED)]) == 0
    config = train_field(scene, root / "runs", iterations=120)
    export_field(config, root / "field", num_points=4000)
    return {"root": root, "scene": scene, "config": config, "export": root / "field"}


def category_mask(scene: Path, file_path: str, category: str) -> np.ndarray:
    """(h, w) bool: the ground-truth pixels of every instance of ``category`` in a frame."""
    objects = json.loads((scene / "ground_truth" / "objects.json").read_text())["objects"]
    frames = json.loads((scene / "transforms.json").read_text())["frames"]
    frame = next(f for f in frames if f["file_path"] == file_path)
    ids = [int(key) for key, value in objects.items() if value["category"] == category]
    return np.isin(np.asarray(Image.open(scene / frame["instance_path"])), ids)


def overlap(highlight: np.ndarray, truth: np.ndarray, tolerance: int = 0) -> tuple[float, float]:
    """(precision, recall) of a highlighted mask against the ground truth; precision counts highlighted pixels
    within ``tolerance`` px of the truth as on it (a render coarser than the screen blurs edges by a pixel)."""
    from scipy.ndimage import binary_dilation

    near = binary_dilation(truth, np.ones((2 * tolerance + 1,) * 2, bool)) if tolerance else truth
    return (float((highlight & near).sum()) / max(int(highlight.sum()), 1),
            float((highlight & truth).sum()) / max(int(truth.sum()), 1))


# ------------------------------------------------------------------------------------------ settings
def test_settings_from_environment() -> None:
    from find3d.field.viewer import Settings

    settings = Settings.from_environment({"FIND3D_QUERY": " the mug ", "FIND3D_NEGATIVES": "cup, bowl ,",
                                          "FIND3D_THRESHOLD": "0.7", "FIND3D_FIELD": "out/field"})
    assert (settings.query, settings.threshold, settings.export) == ("the mug", 0.7, "out/field")
    assert settings.negative_phrases() == ["cup", "bowl"] and Settings().negative_phrases() is None
    for bad in ("1.5", "high", "nan"):
        with pytest.raises(InputError, match=f"FIND3D_THRESHOLD={bad!r}.*number in \\[0, 1\\]"):
            Settings.from_environment({"FIND3D_THRESHOLD": bad})


def test_find_export_through_the_run_folder(tmp_path: Path) -> None:
    """The newest export naming this run's config.yml, beside the runs folder; not another run's, nor a hidden
    (staging) folder's."""
    from find3d.field.viewer import find_export
    from find3d.query.field import FORMAT

    config = tmp_path / "runs" / "scene" / "find-field" / "2026-01-01_000000" / "config.yml"
    config.parent.mkdir(parents=True)
    config.write_text("")
    assert find_export(config) is None
    for name, owner in (("old", config), ("other", tmp_path / "elsewhere.yml"), ("new", config), (".staging", config)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "meta.json").write_text(json.dumps({"format": FORMAT, "config": str(owner)}))
        time.sleep(0.01)  # distinct modification times
    assert find_export(config) == tmp_path / "new"
    deep = tmp_path / "deep" / "1" / "2" / "3" / "4" / "run" / "config.yml"  # the export 5 folders up: not searched
    deep.parent.mkdir(parents=True)
    (tmp_path / "deep" / "export").mkdir()
    (tmp_path / "deep" / "export" / "meta.json").write_text(json.dumps({"format": FORMAT, "config": str(deep)}))
    assert find_export(deep) is None
    assert find_export(tmp_path / "deep" / "1" / "2" / "3" / "run" / "config.yml") is None  # another run


def test_queries_need_the_runs_interface(tmp_path: Path) -> None:
    from find3d.field.viewer import Asker

    with pytest.raises(InputError, match=r"no interface checkpoint recorded; .*embed-frames"):
        Asker({"embeddings_dir": str(tmp_path), "checkpoint": None}, 256).interface()
    with pytest.raises(InputError, match=r"gone\.pt is gone"):
        Asker({"checkpoint": str(tmp_path / "gone.pt")}, 256).interface()


# ------------------------------------------------------------------------------------------- outputs
@pytest.fixture(scope="module")
def model(field: dict[str, Path]):
    """The trained find-field model, as nerfstudio's viewer and ns-render load it."""
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(field["config"], test_mode="inference")
    return pipeline


def render(pipeline, file_path: str, scale: float = 0.5) -> dict:
    """The model's whole-image outputs for a training frame, at ``scale`` of its size."""
    dataset = pipeline.datamanager.train_dataset
    index = next(i for i, name in enumerate(dataset.image_filenames) if name.as_posix().endswith(file_path))
    camera = dataset.cameras[index:index + 1]
    camera.rescale_output_resolution(scale)
    return pipeline.model.get_outputs_for_camera(camera)


def best_frame(field: dict[str, Path], query: str) -> str:
    import find3d
    from find3d.query.answer import answer

    interface = find3d.Interface.from_checkpoint(PACKAGED, device="cpu")
    return answer(find3d.Field.load(field["export"]), interface, query, top_k=1).result.frames[0].file_path


@pytest.mark.slow
def test_outputs_draw_the_answer(field: dict[str, Path], model) -> None:
    controls = model.model.find3d
    frame = best_frame(field, FIRST)
    assert "relevancy" not in render(model, frame)  # without a viewer, only a query adds the outputs

    controls.set(query=FIRST, export=str(field["export"]))
    started = time.perf_counter()
    outputs = render(model, frame)
    print(f"first frame with a new query (encoding + whole-object answer): {time.perf_counter() - started:.1f} s; "
          f"{controls.current().message}")
    rgb, composited = outputs["rgb"].clamp(0, 1).numpy(), outputs["composited"].numpy()
    assert outputs["relevancy"].shape == (*rgb.shape[:2], 1) and composited.shape == rgb.shape
    assert float(outputs["relevancy"].min()) >= 0.0 and float(outputs["relevancy"].max()) <= 1.0
    highlight = np.abs(composited - rgb).sum(axis=-1) > 0.25
    truth = category_mask(field["scene"], frame, "tray")[::2, ::2]
    precision, recall = overlap(highlight, truth)
    print(f"{FIRST!r} on {frame}: {highlight.sum()} px highlighted, precision {precision:.2f}, recall {recall:.2f}")
    assert precision >= MIN_PRECISION and recall >= MIN_RECALL
    # The outline is drawn (whole objects), and the answer is the export's own: find3d query's points.
    assert np.isclose(composited, (1.0, 0.0, 1.0), atol=1e-3).all(axis=-1).any()

    # Each pixel on its own: pixels at or above the threshold, none at threshold 1.
    controls.set(objects=False, threshold=1.0)
    outputs = render(model, frame)
    np.testing.assert_allclose(outputs["composited"].numpy(), outputs["rgb"].clamp(0, 1).numpy())
    assert "relevancy >= 1.00" in controls.current().message
    controls.set(threshold=0.5, objects=True, query="")
    assert "relevancy" not in render(model, frame)


@pytest.mark.slow
def test_write_answer_matches_find3d_query(field: dict[str, Path], model) -> None:
    from find3d.cli import main
    from find3d.field.viewer import Asker, Settings

    asker = Asker(model.datamanager.train_dataset.metadata, model.model.feature_dim)
    settings = Settings(query=FIRST, export=str(field["export"]))
    out, points = asker.write(settings, field["config"], Path.cwd())
    assert out == field["config"].parent / "find3d_queries" / "the-tray" and points > 0
    assert main(["query", "--field", str(field["export"]), FIRST, "--out", str(field["root"] / "cli")]) == 0
    np.testing.assert_array_equal(np.load(out / "query.npz")["indices"],
                                  np.load(field["root"] / "cli" / "query.npz")["indices"])
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(p.name for p in (field["root"] / "cli").iterdir())
    assert {"mask.ply", "query.npz", "frames.json"} <= set(written)
    assert any(name.startswith("relevancy_") for name in written)
    with pytest.raises(InputError, match="export-field"):
        Asker(model.datamanager.train_dataset.metadata, model.model.feature_dim).write(
            Settings(query=FIRST), field["root"] / "elsewhere" / "config.yml", Path.cwd())


@pytest.mark.slow
def test_controls_answer_on_a_worker(field: dict[str, Path], model) -> None:
    """The viewer calls a control's hook per keystroke, under the trainer's lock: the hook only queues; the
    worker encodes once typing pauses, for the last text only."""
    controls = model.model.find3d
    asked = []
    ask = controls._asker.ask
    controls._asker.ask = lambda settings, *args: asked.append(settings.query) or ask(settings, *args)
    try:
        controls.set(export=str(field["export"]))
        slowest = 0.0
        for end in range(1, len(SECOND) + 1):  # "t", "th", ..., "the robot"
            controls.set(query=SECOND[:end])
            started = time.perf_counter()
            controls.c1_query.cb_hook(controls.c1_query)
            slowest = max(slowest, time.perf_counter() - started)
        wait_until(lambda: controls.c6_status.value.startswith(repr(SECOND)), 120, "the worker's answer")
        print(f"slowest hook {slowest * 1000:.1f} ms; asked {asked}; status {controls.c6_status.value}")
        assert slowest < 0.05 and asked == [SECOND]
        controls.set(query="<image:missing.png>")
        controls.c1_query.cb_hook(controls.c1_query)
        wait_until(lambda: controls.c6_status.value.startswith("error:"), 60, "the error in Status")
        assert "missing.png" in controls.c6_status.value and controls._answer is None
    finally:
        controls._asker.ask = ask
        controls.set(query="", export="")


# --------------------------------------------------------------------------------------------- ns-render
def camera_path(scene: Path, file_path: str, config: Path, size: int) -> dict:
    """nerfstudio's camera-path JSON for one training frame (its pose in nerfstudio's frame)."""
    import math

    from find3d.field.viewer import pose_to_nerfstudio

    transforms = json.loads((scene / "transforms.json").read_text())
    frame = next(f for f in transforms["frames"] if f["file_path"] == file_path)
    world = json.loads((config.parent / "dataparser_transforms.json").read_text())
    c2w = np.eye(4)
    c2w[:3] = pose_to_nerfstudio(np.asarray(frame["transform_matrix"]), np.asarray(world["transform"]),
                                 world["scale"])
    fov = math.degrees(2 * math.atan(transforms["h"] / (2 * transforms["fl_y"])))
    return {"camera_type": "perspective", "render_height": size, "render_width": size, "fps": 1, "seconds": 1,
            "camera_path": [{"camera_to_world": c2w.reshape(-1).tolist(), "fov": fov, "aspect": 1.0}]}


@pytest.mark.slow
def test_ns_render_query_from_environment(field: dict[str, Path], tmp_path: Path) -> None:
    frame = best_frame(field, FIRST)
    path = tmp_path / "path.json"
    path.write_text(json.dumps(camera_path(field["scene"], frame, field["config"], 64)))
    command = [str(BIN / "ns-render"), "camera-path", "--load-config", str(field["config"]), "--camera-path-filename",
               str(path), "--output-format", "images", "--image-format", "png", "--rendered-output-names",
               "rgb", "composited", "--output-path", str(tmp_path / "render")]
    env = {**os.environ, "FIND3D_QUERY": FIRST, "FIND3D_FIELD": str(field["export"]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    [image] = (tmp_path / "render").glob("*.png")
    both = np.asarray(Image.open(image).convert("RGB")).astype(np.float32) / 255  # rgb | composited, side by side
    rgb, composited = both[:, :64], both[:, 64:]
    highlight = np.abs(composited - rgb).sum(axis=-1) > 0.25
    precision, recall = overlap(highlight, category_mask(field["scene"], frame, "tray")[::2, ::2])
    print(f"ns-render {FIRST!r} on {frame}: precision {precision:.2f}, recall {recall:.2f}")
    assert precision >= MIN_PRECISION and recall >= MIN_RECALL



def test_bad_environment_stops_with_its_message(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A bad FIND3D_* value ends ns-render (or ns-viewer) with one line naming it, when the model is built."""
    import torch
    from nerfstudio.data.scene_box import SceneBox

    from find3d.field.model import FindFieldModelConfig

    monkeypatch.setenv("FIND3D_THRESHOLD", "lots")
    box = SceneBox(aabb=torch.tensor([[-1.0, -1, -1], [1, 1, 1]]))
    with pytest.raises(SystemExit) as stopped:
        FindFieldModelConfig().setup(scene_box=box, num_train_data=4, metadata={"feature_dim": 8})
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip() == ("find3d: error: FIND3D_THRESHOLD='lots': not a number in [0, 1]; "
                                               "set it to e.g. 0.5 or unset it.")


# ------------------------------------------------------------------------------------- in a real browser
HELPERS = """window.f3 = {
  label(text) { return [...document.querySelectorAll('label')].find(e => e.innerText.trim() === text); },
  input(text) {  // the visible input of the control labelled ``text``
    let row = this.label(text);
    const visible = e => [...e.querySelectorAll('input')].filter(i => i.type !== 'hidden');
    while (row && !visible(row).length) row = row.parentElement;
    return row ? visible(row).pop() : null; },
  centre(el) { el.scrollIntoView({block: 'center'}); const b = el.getBoundingClientRect();
               return [b.x + b.width / 2, b.y + b.height / 2]; },
  button(text) { return [...document.querySelectorAll('button')].find(b => b.innerText.trim() === text); },
  option(text) { return [...document.querySelectorAll('[role=option]')].find(o => o.innerText.trim() === text); },
  resolution() { const m = document.body.innerText.match(/Resolution: (\\d+)x(\\d+)px/);
                 return m ? [+m[1], +m[2]] : null; },
  canvases() { return [...document.querySelectorAll('canvas')].map(c => { const b = c.getBoundingClientRect();
               return [b.x, b.y, b.width, b.height]; }); },
};"""


class Viewer:
    """nerfstudio's viewer in Chromium, driven as a user would: clicks, typing, dropdowns, screenshots."""

    def __init__(self, page) -> None:
        self.page = page

    def js(self, expression: str):
        self.page.evaluate(HELPERS)
        return self.page.evaluate(expression)

    def type(self, label: str, text: str) -> None:
        """Type over an input, again if the text did not land: on a loaded machine a click computed just before
        the panel re-laid itself out can miss the field, and a user would then type again."""
        value = f"f3.input({label!r}).value"
        for _ in range(3):
            self.page.type_into(*self.js(f"f3.centre(f3.input({label!r}))"), text)
            try:
                wait_until(lambda: self.js(value) == text, 10, f"{text!r} in {label}")
                return
            except AssertionError:
                continue
        raise AssertionError(f"{label} holds {self.js(value)!r} after typing {text!r} three times")

    def press(self, button: str) -> None:
        self.page.click(*self.js(f"f3.centre(f3.button({button!r}))"))

    def status(self) -> str:
        return self.js("f3.input('Status').value") or ""

    def pick(self, label: str, option: str) -> None:
        """Choose ``option`` in a Mantine select: it opens on a real click, then the option is clicked."""
        self.page.click(*self.js(f"f3.centre(f3.input({label!r}))"))
        self.page.click(*wait_until(lambda: self.js(f"f3.option({option!r}) ? f3.centre(f3.option({option!r})) : null"),
                                    30, f"option {option} of {label}"))

    def next_full_frame(self) -> np.ndarray:
        """Screenshot once the viewer has sent a new render at full resolution: after a change it first sends
        smaller ones, so a small one must be seen before the full one counts."""
        seen_small = False

        def full() -> bool:
            nonlocal seen_small
            size = self.js("f3.resolution()")
            seen_small = seen_small or (size is not None and max(size) < MAX_RES)
            return seen_small and size is not None and max(size) == MAX_RES

        wait_until(full, 300, "a full-resolution render", every=0.1)
        time.sleep(1.0)  # the browser draws the image it received
        return self.page.screenshot()

    def canvas(self) -> tuple[int, int, int, int]:
        """(x, y, w, h) of the 3D view: the canvas whose shape is the rendered image's."""
        width, height = self.js("f3.resolution()")
        return min(((round(x), round(y), round(w), round(h)) for x, y, w, h in self.js("f3.canvases()") if h > 0),
                   key=lambda c: abs(c[2] / c[3] - width / height))


def frame_in_view(scene: Path, file_path: str, category: str, view: tuple[int, int, int, int],
                  shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(ground truth, inside) as screenshot masks: the category's pixels of a training frame, seen by the viewer's
    camera at that frame's pose and vertical field of view (the view is wider, the frame sits in its middle)."""
    transforms = json.loads((scene / "transforms.json").read_text())
    truth = category_mask(scene, file_path, category)
    x0, y0, width, height = view
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]]
    scale = transforms["h"] / height  # frame pixels per screen pixel (equal vertical fields of view)
    fx = (xs + 0.5 - x0 - width / 2) * scale * transforms["fl_x"] / transforms["fl_y"] + transforms["cx"]
    fy = (ys + 0.5 - y0 - height / 2) * scale + transforms["cy"]
    inside = (fx >= 0) & (fx < transforms["w"]) & (fy >= 0) & (fy < transforms["h"])
    inside &= (xs >= x0) & (xs < x0 + width) & (ys >= y0) & (ys < y0 + height)
    sampled = truth[np.clip(fy.astype(int), 0, transforms["h"] - 1), np.clip(fx.astype(int), 0, transforms["w"] - 1)]
    return sampled & inside, inside


@pytest.mark.slow
def test_viewer_in_chromium(field: dict[str, Path], tmp_path: Path) -> None:
    """ns-viewer on the finished run at 127.0.0.1; type a query into find3d's box, go to its best view, pick
    `composited` in Output type: the tray is highlighted and little else; a second query moves the highlight."""
    port = free_port()
    log = (tmp_path / "viewer.log").open("w")
    # PNG frames: colours as rendered, without JPEG's blur of the highlight's edges
    viewer = subprocess.Popen([str(BIN / "ns-viewer"), "--load-config", str(field["config"]),
                               "--viewer.websocket-host", "127.0.0.1", "--viewer.websocket-port", str(port),
                               "--viewer.image-format", "png"],
                              stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    started = time.monotonic()

    def serving() -> bool:
        assert viewer.poll() is None, (tmp_path / "viewer.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_until(serving, 300, "ns-viewer")
        with chromium(tmp_path / "profile") as page:
            ui = Viewer(page)
            page.send("Page.navigate", url=f"http://127.0.0.1:{port}/")
            wait_until(lambda: ui.js("!!f3.input('Query') && !!f3.input('Max res')"), 300, "find3d's controls")
            steps = [("controls", time.monotonic())]
            # A smaller render first: the first full-size one (512 px) would take minutes on a CPU.
            ui.type("Max res", str(MAX_RES))
            page.press_enter()
            ui.press("Hide Train Cams")  # frustums would be drawn over the render
            ui.type("Query", FIRST)
            ui.pick("Output type", "rgb")  # the reference, while the first query is answered
            # any answer ends the wait (found, "not found" or an error); only a found one passes
            wait_until(lambda: any(k in ui.status() for k in ANSWERED), 300, "the first answer")
            assert ui.status().startswith(repr(FIRST)) and "points of" in ui.status(), ui.status()
            steps.append(("first answer", time.monotonic()))
            ui.press("Go to best view")
            status = wait_until(lambda: "best view:" in ui.status() and ui.status(), 120, "the best view")
            frame = status.split("best view: ")[1].split(" (")[0]
            rgb = ui.next_full_frame()
            Image.fromarray(rgb).save(tmp_path / "rgb.png")
            rgb = rgb.astype(np.int32)
            steps.append(("rgb at the best view", time.monotonic()))
            ui.pick("Output type", "composited")
            first = ui.next_full_frame()
            steps.append(("composited", time.monotonic()))
            Image.fromarray(first).save(tmp_path / "composited_1.png")
            # the second query: an object the best view of the first shows (its ground truth says which)
            then = next((q for q in (SECOND, *OTHERS) if category_mask(field["scene"], frame, q[4:]).sum() > 50),
                        SECOND)
            ui.type("Query", then)
            wait_until(lambda: ui.status().startswith(repr(then)), 300, "the second answer")
            second = ui.next_full_frame()
            steps.append(("second query", time.monotonic()))
            Image.fromarray(second).save(tmp_path / "composited_2.png")
            view, rendered = ui.canvas(), ui.js("f3.resolution()")
        print("browser test, s from ns-viewer's start: " + ", ".join(f"{name} {at - started:.0f}" for name, at in steps)
              + f"; view {view} of {rgb.shape[1]}x{rgb.shape[0]}; best view of {FIRST!r}: {frame}; screenshots in "
              f"{tmp_path}")
    finally:
        viewer.terminate()
        viewer.wait(timeout=30)
    tray, inside = frame_in_view(field["scene"], frame, "tray", view, rgb.shape[:2])
    other, _ = frame_in_view(field["scene"], frame, then[4:], view, rgb.shape[:2])
    assert tray.sum() > 500 and other.sum() > 50, "both queried objects must be in the view"
    highlights = [(np.abs(shot.astype(np.int32) - rgb).sum(axis=-1) > 60) & inside for shot in (first, second)]
    pixel = int(np.ceil(view[3] / rendered[1]))  # one rendered pixel, in screen pixels
    for highlight, truth, query in zip(highlights, (tray, other), (FIRST, then)):
        precision, recall = overlap(highlight, truth, tolerance=pixel)
        print(f"{query!r}: {highlight.sum()} px highlighted of {inside.sum()} in the frame, precision "
              f"{precision:.2f}, recall {recall:.2f}")
        assert 0 < highlight.sum() < 0.5 * inside.sum()  # not nothing, not everything
        assert precision >= MIN_PRECISION and recall >= MIN_RECALL, query
    assert overlap(highlights[1], tray)[1] < 0.2  # the highlight left the tray
