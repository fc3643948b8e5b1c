"""Teachers backed by transformers vision backbones, loaded from a local directory.

Supported: DINOv2 (``dinov2``), DINOv2 with registers (``dinov2_with_registers``),
DINOv3 ViT (``dinov3_vit``) and Depth Anything (``depth_anything``, whose DINOv2 backbone
is used; the depth neck and head are dropped). Weights are read with
``local_files_only=True``: runs never touch the network, and a missing directory is a
clear error rather than a download attempt.

Features are the residual stream, not the final-normed output: layer ``k`` is the output
of block ``k`` (``0`` = the embeddings with position information), the same tensors
transformers returns as ``hidden_states[k]``. They are captured with forward hooks on the
embedding module and on each block, and the forward is cut short by an exception after
the deepest requested block -- the model classes have no "stop at layer k" option, and
hooks avoid depending on each block's call signature (DINOv3 passes RoPE tables).

Every model puts its special tokens first: one CLS token, then ``num_register_tokens``
registers (0 for plain DINOv2 and Depth Anything); the rest is the row-major patch grid.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from rocket_vla.errors import RocketError
from rocket_vla.teachers.base import IMAGENET_MEAN, IMAGENET_STD, Teacher, TeacherInput

SUPPORTED = ("dinov2", "dinov2_with_registers", "dinov3_vit", "depth_anything")


class _Stop(Exception):
    """Raised from a hook to end the forward pass after the deepest requested block."""


def _model_class(model_type: str) -> type[nn.Module]:
    import transformers

    classes = {
        "dinov2": "Dinov2Model",
        "dinov2_with_registers": "Dinov2WithRegistersModel",
        "dinov3_vit": "DINOv3ViTModel",
        "depth_anything": "DepthAnythingForDepthEstimation",
    }
    return getattr(transformers, classes[model_type])


def _block_list(core: nn.Module) -> nn.ModuleList:
    """The ModuleList of transformer blocks, wherever this model family keeps it."""
    for path in ("encoder.layer", "model.layer", "layer"):
        obj: object = core
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.ModuleList):
            return obj
    raise RocketError(
        f"cannot find the transformer blocks of {type(core).__name__}; use one of {SUPPORTED}."
    )


def _first(output: object) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output  # type: ignore[return-value]


class HFTeacher(Teacher):
    """A transformers ViT backbone as a teacher; build it with :meth:`from_pretrained`."""

    def __init__(
        self,
        model: nn.Module,
        model_type: str,
        input_cfg: TeacherInput | None = None,
        *,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__(input_cfg)
        if model_type not in SUPPORTED:
            raise RocketError(
                f"transformers teacher type {model_type!r} is not supported; use one of "
                f"{SUPPORTED}."
            )
        core = model.backbone if model_type == "depth_anything" else model
        self.model = core.eval().requires_grad_(False)
        self.model_type = model_type
        self.name = model_type
        config = core.config
        self.hf_config = config
        self.num_layers = int(config.num_hidden_layers)
        self.dim = int(config.hidden_size)
        patch = config.patch_size
        self.patch_size = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
        self.num_special = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.embeddings = core.embeddings
        self.blocks = _block_list(core)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        input_cfg: TeacherInput | None = None,
        *,
        device: torch.device | str = "cpu",
    ) -> HFTeacher:
        """Load a saved model directory (``config.json`` + weights) without network access."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise RocketError(
                f"{path} is not a transformers model directory (no config.json); download the "
                "model yourself and pass its local folder."
            )
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as err:  # transformers' parse errors
            raise RocketError(
                f"{path / 'config.json'} cannot be read as a transformers config "
                f"({type(err).__name__}); it is damaged -- re-download the model into that folder."
            ) from err
        model_type = config.model_type
        if model_type not in SUPPORTED:
            raise RocketError(
                f"{path} holds a {model_type!r} model; transformers teachers support {SUPPORTED}."
            )
        try:
            model = _model_class(model_type).from_pretrained(
                str(path), local_files_only=True, dtype=torch.float32
            )
        except (OSError, ValueError, RuntimeError) as err:  # missing, truncated or damaged weights
            raise RocketError(
                f"the weights in {path} cannot be loaded ({type(err).__name__}); they are missing or "
                "damaged -- re-download the model into that folder."
            ) from err
        mean, std = _normalisation(path)
        return cls(model, model_type, input_cfg, mean=mean, std=std).to(device)  # type: ignore[return-value]

    def _architecture(self) -> dict:
        config = self.hf_config.to_dict()
        config.pop("transformers_version", None)
        return {
            "class": type(self.model).__name__,
            "config": json.loads(json.dumps(config, default=str)),
            "mean": self.mean,
            "std": self.std,
        }

    def _hook_points(self, deepest: int) -> Iterator[tuple[int, nn.Module]]:
        """(layer index, module whose output is that layer) up to ``deepest``."""
        yield 0, self.embeddings
        yield from enumerate(self.blocks[:deepest], start=1)

    def _forward_layers(self, images: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        b, s, _, height, width = images.shape
        rows, cols = height // self.patch_size, width // self.patch_size
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        pixels = (images.reshape(b * s, 3, height, width) - mean) / std

        wanted, deepest = set(layers), max(layers)
        captured: dict[int, torch.Tensor] = {}
        handles = []

        def make_hook(index: int):
            def hook(_module: nn.Module, _inputs: object, output: object) -> None:
                if index in wanted:
                    captured[index] = _first(output)
                if index == deepest:
                    raise _Stop

            return hook

        for index, module in self._hook_points(deepest):
            handles.append(module.register_forward_hook(make_hook(index)))
        try:
            self.model(pixel_values=pixels)
        except _Stop:
            pass
        finally:
            for handle in handles:
                handle.remove()

        outs = []
        for k in layers:
            tokens = captured[k]
            if tokens.shape[1] != self.num_special + rows * cols:
                raise RocketError(
                    f"{self.name} layer {k} has {tokens.shape[1]} tokens, expected "
                    f"{self.num_special} special + {rows}x{cols} patches; check the model's "
                    "patch size and register count."
                )
            patches = tokens[:, self.num_special:]
            outs.append(patches.reshape(b, s, rows, cols, self.dim))
        return outs


def _normalisation(path: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std from the model's ``preprocessor_config.json``, else ImageNet's."""
    pre = path / "preprocessor_config.json"
    if pre.is_file():
        data = json.loads(pre.read_text())
        mean, std = data.get("image_mean"), data.get("image_std")
        if isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == 3:
            return tuple(mean), tuple(std)
    return IMAGENET_MEAN, IMAGENET_STD
