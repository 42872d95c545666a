"""Frozen encoders: the packaged models loaded for real, tiny Hugging Face models built offline, the
feature cache, bad inputs and ``find3d models``."""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from find3d import cli
from find3d.encoders import (
    available_language_encoders,
    available_vision_encoders,
    build_language_encoder,
    build_vision_encoder,
    hf_language,
    packaged,
)
from find3d.encoders.base import LanguageEncoder, TokenEmbeddings, VisionEncoder
from find3d.encoders.cache import FeatureCache, _write
from find3d.errors import InputError, ModelError

TEXTS = ["a red mug on the wooden table", "duck"]
CHANNELS = {"efficientnet-lite0": (24, 40, 112, 320), "mobilenetv2": (24, 32, 96, 320)}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Encode on one core: the machine is shared, and OpenMP threads spin-wait badly when oversubscribed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vision() -> dict[str, VisionEncoder]:
    return {name: build_vision_encoder(name) for name in CHANNELS}


@pytest.fixture(scope="module")
def minilm() -> LanguageEncoder:
    return build_language_encoder("minilm-l6")


@pytest.fixture(scope="module")
def smollm2_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("find3d-cache")


@pytest.fixture(scope="module")
def smollm2(smollm2_cache: Path) -> LanguageEncoder:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FIND3D_CACHE", str(smollm2_cache))
        assert not hf_language.smollm2_cache_dir().exists()
        return build_language_encoder("smollm2-135m")  # converts the GGUF (~20 s, once)


@pytest.fixture()
def images() -> torch.Tensor:
    return torch.rand(2, 3, 96, 136, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------- packaged vision encoders


@pytest.mark.parametrize("name", list(CHANNELS))
def test_vision_pyramid_shapes_and_determinism(vision: dict[str, VisionEncoder], images: torch.Tensor, name: str):
    encoder = vision[name]
    pyramid = encoder(images)
    assert encoder.name == name
    assert encoder.strides == (4, 8, 16, 32) and encoder.channels == CHANNELS[name]
    assert list(pyramid) == [4, 8, 16, 32]
    for stride, channels in zip(encoder.strides, encoder.channels):
        # 96 x 136 with "SAME" rounding: ceil(96/32) = 3, ceil(136/32) = 5
        assert pyramid[stride].shape == (2, channels, -(-96 // stride), -(-136 // stride))
        assert pyramid[stride].dtype == torch.float32 and torch.isfinite(pyramid[stride]).all()
        assert not pyramid[stride].requires_grad
    again = encoder(images)
    assert all(torch.equal(pyramid[s], again[s]) for s in pyramid)
    # each image is encoded independently of its batch mates
    single = encoder(images[1:])
    assert all(torch.allclose(pyramid[s][1:], single[s], atol=1e-4) for s in pyramid)


@pytest.mark.parametrize("name", list(CHANNELS))
def test_vision_features_depend_on_content(vision: dict[str, VisionEncoder], images: torch.Tensor, name: str):
    pyramid = vision[name](images)
    assert not torch.allclose(pyramid[32][0], pyramid[32][1])


def _train_head_one_step(encoder: nn.Module, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step of a trainable head over frozen features; returns its weight before and after."""
    head = nn.Linear(features.shape[-1], 1)
    initial = head.weight.detach().clone()
    # the optimizer is handed the encoder's parameters too: freezing must hold even then
    optimizer = torch.optim.SGD([*head.parameters(), *encoder.parameters()], lr=0.1, momentum=0.9, weight_decay=0.1)
    encoder.train()
    head(features).square().mean().backward()
    optimizer.step()
    return initial, head.weight.detach()


@pytest.mark.parametrize("name", list(CHANNELS))
def test_vision_encoder_is_frozen(vision: dict[str, VisionEncoder], images: torch.Tensor, name: str):
    encoder = vision[name]
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    initial, trained = _train_head_one_step(encoder, encoder(images)[32].permute(0, 2, 3, 1))
    assert not encoder.training and all(not m.training for m in encoder.modules())
    assert all(not p.requires_grad and p.grad is None for p in encoder.parameters())
    after = encoder.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats included
    assert not torch.equal(initial, trained)


# ---------------------------------------------------------------- packaged language encoders


def _check_tokens(out: TokenEmbeddings, dim: int) -> None:
    assert out.tokens.ndim == 3 and out.tokens.shape[0] == len(TEXTS) and out.tokens.shape[2] == dim
    assert out.mask.dtype == torch.bool and out.mask.shape == out.tokens.shape[:2]
    lengths = out.mask.sum(1)
    assert lengths[0] > lengths[1] >= 1  # the long text has more real tokens; the short one is padded
    assert out.mask[:, 0].all() and torch.isfinite(out.tokens).all()


def test_minilm_tokens_layers_and_determinism(minilm: LanguageEncoder):
    assert minilm.name == "minilm-l6" and minilm.dim == 384 and minilm.layer == -1
    out = minilm(TEXTS)
    _check_tokens(out, 384)
    assert torch.equal(out.tokens, minilm(TEXTS).tokens)
    embeddings = build_language_encoder("minilm-l6", layer=0)(TEXTS).tokens
    assert torch.equal(build_language_encoder("minilm-l6", layer=-7)(TEXTS).tokens, embeddings)  # 6 layers
    assert not torch.allclose(embeddings, out.tokens)


@pytest.mark.slow  # the first SmolLM2 load dequantizes the GGUF (~20 s)
def test_smollm2_layer_minus_12_from_converted_cache(smollm2: LanguageEncoder, smollm2_cache: Path):
    assert smollm2.name == "smollm2-135m" and smollm2.dim == 576 and smollm2.layer == -12
    assert smollm2.model.config.num_hidden_layers == 30
    out = smollm2(TEXTS)
    _check_tokens(out, 576)
    assert torch.equal(out.tokens, smollm2(TEXTS).tokens)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FIND3D_CACHE", str(smollm2_cache))
        converted = hf_language.smollm2_cache_dir()
        assert converted.parent.parent == smollm2_cache
        assert (converted / "model.safetensors").is_file() and (converted / "tokenizer.json").is_file()
        assert not list(converted.parent.glob(".*"))  # no staging folder left behind

        def reconvert(*_: object) -> None:
            raise AssertionError("the GGUF was converted again instead of loading the safetensors cache")

        patch.setattr(hf_language, "_convert_gguf", reconvert)
        second = build_language_encoder("smollm2-135m", layer=-1)
    assert Path(second.model.name_or_path) == converted
    assert not hasattr(second.model.config, "quantization_config")
    last = second(TEXTS)
    assert torch.equal(last.mask, out.mask) and not torch.allclose(last.tokens, out.tokens)


def test_language_encoder_is_frozen(minilm: LanguageEncoder):
    before = {k: v.clone() for k, v in minilm.state_dict().items()}
    initial, trained = _train_head_one_step(minilm, minilm(TEXTS).tokens)
    assert not minilm.training and all(not p.requires_grad and p.grad is None for p in minilm.parameters())
    assert all(torch.equal(before[k], v) for k, v in minilm.state_dict().items())
    assert not torch.equal(initial, trained)


# ---------------------------------------------------------------- tiny Hugging Face models (no download)


def _fake_hub(cache: Path, repo: str, source: Path) -> None:
    """Lay ``source`` out as the hub cache does: models--org--name/{refs/main, snapshots/<rev>/}."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    folder = cache / ("models--" + repo.replace("/", "--"))
    shutil.copytree(source, folder / "snapshots" / revision)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(revision)


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random-weight models saved with save_pretrained, plus a fake hub cache holding two of them."""
    from transformers import (
        BertConfig,
        BertModel,
        CLIPConfig,
        CLIPModel,
        Dinov2Config,
        Dinov2Model,
        LlamaConfig,
        LlamaForCausalLM,
        SamConfig,
        SamModel,
    )

    root = tmp_path_factory.mktemp("tiny-hf")
    torch.manual_seed(0)
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    models = {
        "clip": CLIPModel(
            CLIPConfig(
                text_config={**small, "vocab_size": 100},
                vision_config={**small, "image_size": 64, "patch_size": 16},
                projection_dim=16,
            )
        ),
        "dinov2": Dinov2Model(Dinov2Config(**small, image_size=56, patch_size=14)),
        "sam": SamModel(
            SamConfig(
                vision_config={
                    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_dim": 64,
                    "image_size": 64, "patch_size": 16, "output_channels": 16, "window_size": 2,
                    "global_attn_indexes": [1],
                },
                prompt_encoder_config={"hidden_size": 16, "image_size": 64, "patch_size": 16},
                mask_decoder_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                     "mlp_dim": 32, "iou_head_hidden_dim": 16},
            )
        ),
        "bert": BertModel(BertConfig(**small, vocab_size=30522, max_position_embeddings=64)),
        "llama": LlamaForCausalLM(
            LlamaConfig(**small, num_key_value_heads=1, vocab_size=30522, max_position_embeddings=64)
        ),
    }
    paths = {}
    for name, model in models.items():
        paths[name] = root / name
        model.save_pretrained(paths[name])
    for name in ("bert", "llama"):  # MiniLM's BERT word-piece tokenizer serves both tiny text models
        for file in TOKENIZER_FILES:
            shutil.copy(packaged.minilm_l6_dir() / file, paths[name] / file)
    paths["hub"] = root / "hub"
    _fake_hub(paths["hub"], "tiny-org/dinov2", paths["dinov2"])
    _fake_hub(paths["hub"], "tiny-org/llama", paths["llama"])
    return paths


@pytest.mark.parametrize(("model", "channels", "fixed"), [("clip", 32, None), ("dinov2", 32, None), ("sam", 16, 64)])
def test_hf_vision_by_path(tiny_hf: dict[str, Path], images: torch.Tensor, model: str, channels: int, fixed):
    encoder = build_vision_encoder(f"hf:{tiny_hf[model]}")
    assert encoder.fixed_size == fixed  # SAM only takes its own 64 px; ViTs interpolate positions
    pyramid = encoder(images)
    assert encoder.strides == (4, 8, 16, 32) and encoder.channels == (channels,) * 4
    for stride in encoder.strides:
        assert pyramid[stride].shape == (2, channels, -(-96 // stride), -(-136 // stride))
    assert torch.equal(pyramid[8], encoder(images)[8])
    assert not torch.equal(pyramid[16][0], pyramid[16][1])  # random tiny SAM outputs are ~1e-21: no allclose
    assert all(not p.requires_grad for p in encoder.parameters())


def test_hf_by_name_from_local_hub_cache(tiny_hf: dict[str, Path], images: torch.Tensor,
                                         monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tiny_hf["hub"]))
    by_name = build_vision_encoder("hf:tiny-org/dinov2")
    by_path = build_vision_encoder(f"hf:{tiny_hf['dinov2']}")
    assert by_name.name == "hf:tiny-org/dinov2"
    assert torch.equal(by_name(images)[16], by_path(images)[16])  # same weights, found through refs/main
    text = build_language_encoder("hf:tiny-org/llama", layer=-2)
    assert text.layer == -2 and text.dim == 32
    _check_tokens(text(TEXTS), 32)
    assert "tiny-org/llama" in _run_cli(["models"])


def test_hf_language_by_path_layers(tiny_hf: dict[str, Path]):
    bert = build_language_encoder(f"hf:{tiny_hf['bert']}")
    assert bert.layer == -1 and bert.dim == 32
    last = bert(TEXTS)
    _check_tokens(last, 32)
    first = build_language_encoder(f"hf:{tiny_hf['bert']}", layer=1)(TEXTS)
    assert torch.equal(build_language_encoder(f"hf:{tiny_hf['bert']}", layer=-2)(TEXTS).tokens, first.tokens)
    assert not torch.allclose(first.tokens, last.tokens)


# ---------------------------------------------------------------- feature cache


class _CallCounter:
    """Counts backbone runs and their batch sizes through a real forward hook."""

    def __init__(self, encoder: nn.Module) -> None:
        self.batches: list[int] = []
        self.handle = encoder.register_forward_hook(lambda _m, args, _out: self.batches.append(args[0].shape[0]))


def test_feature_cache_hits_equal_computed(vision: dict[str, VisionEncoder], tmp_path: Path):
    encoder = vision["efficientnet-lite0"]
    cache = FeatureCache(tmp_path, encoder)
    pixels = np.random.default_rng(0).integers(0, 256, size=(3, 64, 96, 3), dtype=np.uint8)
    counter = _CallCounter(encoder)
    try:
        computed = cache(pixels)
        assert (cache.hits, cache.misses, counter.batches) == (0, 3, [3])
        reference = encoder(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255)
        counter.batches.clear()
        cached = cache(pixels)
        assert (cache.hits, cache.misses, counter.batches) == (3, 3, [])  # no backbone call on a hit
        for stride in encoder.strides:
            assert torch.equal(cached[stride], computed[stride])
            assert torch.equal(cached[stride], reference[stride].half().float())
        # a batch mixing a cached image and a new one runs the backbone on the new one only
        fresh = np.random.default_rng(1).integers(0, 256, size=(1, 64, 96, 3), dtype=np.uint8)
        mixed = cache(np.concatenate([pixels[2:], fresh]))
        assert (cache.hits, cache.misses, counter.batches) == (4, 4, [1])
        assert torch.equal(mixed[32][0], computed[32][2])
        # the same picture at another resolution is another entry
        cache(np.ascontiguousarray(pixels[:1, :32, :64]))
        assert cache.misses == 5
    finally:
        counter.handle.remove()
    files = sorted(cache.root.rglob("*.npy"))
    assert len(files) == 5
    stored = np.load(files[0], mmap_mode="r")
    assert isinstance(stored, np.memmap) and stored.dtype == np.float16


def test_feature_cache_float_input_and_survives_a_new_process(vision: dict[str, VisionEncoder], tmp_path: Path,
                                                               images: torch.Tensor):
    encoder = vision["mobilenetv2"]
    first = FeatureCache(tmp_path, encoder)(images)
    reopened = FeatureCache(tmp_path, encoder)  # e.g. the next training epoch / run
    again = reopened(images)
    assert (reopened.hits, reopened.misses) == (2, 0)
    assert all(torch.equal(first[s], again[s]) for s in first)


def _write_many(target: Path) -> None:
    for _ in range(40):
        _write(target, np.arange(200_000, dtype=np.float16))


def test_feature_cache_same_key_written_by_two_processes(tmp_path: Path):
    target = tmp_path / "ab" / "entry.npy"
    # fork: the children only run numpy and file I/O, and skip re-importing torch
    procs = [multiprocessing.get_context("fork").Process(target=_write_many, args=(target,)) for _ in range(2)]
    for proc in procs:
        proc.start()
    reads = 0
    while any(proc.is_alive() for proc in procs):
        if target.exists():  # every visible version is complete
            assert np.array_equal(np.load(target, mmap_mode="r"), np.arange(200_000, dtype=np.float16))
            reads += 1
    for proc in procs:
        proc.join()
    assert [proc.exitcode for proc in procs] == [0, 0]
    assert np.array_equal(np.load(target), np.arange(200_000, dtype=np.float16))
    assert [p.name for p in target.parent.iterdir()] == ["entry.npy"]  # no temporary files left
    assert reads > 0


# ---------------------------------------------------------------- bad input


def test_unknown_names_list_the_available_ones():
    with pytest.raises(ModelError, match=r"efficientnet-lite0.*mobilenetv2"):
        build_vision_encoder("resnet-50")
    with pytest.raises(ModelError, match=r"minilm-l6.*smollm2-135m"):
        build_language_encoder("llama-7b")
    assert available_vision_encoders()[:2] == ["efficientnet-lite0", "mobilenetv2"]
    assert available_language_encoders()[:2] == ["minilm-l6", "smollm2-135m"]


def test_hf_name_missing_from_cache_says_how_to_fetch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match="huggingface-cli download facebook/dinov2-small"):
        build_vision_encoder("hf:facebook/dinov2-small")
    with pytest.raises(ModelError, match="huggingface-cli download org/missing"):
        build_language_encoder("hf:org/missing")
    with pytest.raises(ModelError, match=r"config\.json"):
        build_vision_encoder(f"hf:{tmp_path}")
    with pytest.raises(ModelError, match="no such folder"):
        build_vision_encoder(f"hf:{tmp_path / 'absent'}")


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (torch.rand(3, 64, 64), r"got shape \(3, 64, 64\)"),
        (torch.rand(1, 4, 64, 64), r"got shape \(1, 4, 64, 64\)"),
        (torch.rand(1, 64, 64, 3), "channels last"),
        (torch.rand(0, 3, 64, 64), "empty"),
        (torch.rand(1, 3, 16, 64), "too small"),
        (torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8), "dtype torch.uint8"),
        (torch.rand(1, 3, 64, 64) * 255, r"values span \[.*\]"),
        (torch.full((1, 3, 64, 64), float("nan")), "values span"),
        (np.zeros((1, 3, 64, 64), dtype=np.float32), "got ndarray"),
    ],
)
def test_bad_images_raise_input_error(vision: dict[str, VisionEncoder], bad, match: str):
    with pytest.raises(InputError, match=match) as info:
        vision["efficientnet-lite0"](bad)
    assert "images" in str(info.value) and "(B, 3, H, W)" in str(info.value)


@pytest.mark.parametrize("bad", [[], "", [""], ["mug", "   "], ["mug", 3], None, b"a mug"])
def test_bad_texts_raise_input_error(minilm: LanguageEncoder, bad):
    with pytest.raises(InputError, match="texts"):
        minilm(bad)


def test_bad_layer_and_cache_input_raise_input_error(vision: dict[str, VisionEncoder], tmp_path: Path):
    with pytest.raises(InputError, match=r"6 layers; choose 0..6 or -1..-7"):
        build_language_encoder("minilm-l6", layer=7)
    cache = FeatureCache(tmp_path, vision["efficientnet-lite0"])
    with pytest.raises(InputError, match=r"expected \(B, H, W, 3\)"):
        cache(np.zeros((2, 3, 64, 64), dtype=np.uint8))
    with pytest.raises(InputError, match="float64 numpy array"):
        cache(np.zeros((2, 64, 64, 3)))


# ---------------------------------------------------------------- find3d models


def _run_cli(argv: list[str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "find3d.cli", *argv], capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout


def test_models_command_lists_encoders_and_weights():
    out = _run_cli(["models"])
    for name in ("efficientnet-lite0", "mobilenetv2", "minilm-l6", "smollm2-135m"):
        line = next(line for line in out.splitlines() if line.strip().startswith(name))
        assert "weights present" in line
    assert out.count("hf:<name or path>") == 2
    vision_only = _run_cli(["models", "--kind", "vision"])
    assert "mobilenetv2" in vision_only and "minilm-l6" not in vision_only
    assert cli.COMMANDS["models"].module == "find3d.encoders.list_models"
