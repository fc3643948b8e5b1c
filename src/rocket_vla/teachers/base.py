"""The `Teacher` interface: a frozen vision model seen as a stack of patch-feature layers.

Everything that consumes teacher features (the aligner, the feature cache, the CKA
analysis) talks to this interface only, so VGGT, transformers backbones and the bundled
tiny teacher are interchangeable. The base class owns the parts every teacher must get
right in the same way -- layer-index resolution, input checks and resizing, eval mode,
``no_grad``, autocast that follows the device, the output layout -- and a subclass only
says how to run its blocks up to a given depth (``_forward_layers``).

Layer indices follow the project convention (:mod:`rocket_vla.align.indices`): ``k`` is
the residual stream after block ``k``, ``0`` the embeddings, ``-1`` the last block.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rocket_vla.align.indices import resolve_layers
from rocket_vla.errors import RocketError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

AUTOCAST_CHOICES = ("auto", "off", "bfloat16", "float16")
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
COMPILE_CHOICES = ("off", "auto", "blocks")


@dataclass
class TeacherInput:
    """How frames are prepared before a teacher sees them.

    ``size`` (height, width) resizes every frame bilinearly first, so datasets whose
    frames are not multiples of the patch size (LIBERO's 128/256 px) can be fed as they
    are; ``None`` requires the caller's frames to already fit the patch size.
    ``autocast`` is ``"auto"`` (bfloat16 on CUDA when supported, else float16 there;
    float16 on MPS; full precision on CPU, where reduced-precision matmuls are slow and
    change the numbers), ``"off"``, or an explicit dtype name.
    """

    size: tuple[int, int] | None = None
    autocast: str = "auto"

    def __post_init__(self) -> None:
        if self.autocast not in AUTOCAST_CHOICES:
            raise RocketError(
                f"teacher autocast {self.autocast!r} is unknown; use one of {AUTOCAST_CHOICES}."
            )
        if self.size is not None:
            self.size = (int(self.size[0]), int(self.size[1]))


@dataclass
class TeacherRuntime:
    """How a teacher executes, as opposed to what it sees (:class:`TeacherInput`).

    ``dtype`` is the dtype the weights are *stored* in and the network runs at, with no
    autocast around it: ``"float32"`` keeps the full-precision weights and lets
    ``TeacherInput.autocast`` decide the matmul precision; ``"bfloat16"``/``"float16"`` cast
    the weights once and run natively, which removes autocast's per-call weight casts
    (2.4 GB of writes per VGGT-1B call) and halves the teacher's memory. ``"auto"`` is float32:
    the official ROCKET recipe keeps VGGT's weights in float32 and runs it under
    ``torch.autocast("cuda", dtype=torch.bfloat16)``
    (``openvla-ROCKET/vla-scripts/finetune_rocket.py``, ``openpi-ROCKET/src/openpi/
    models_pytorch/pi0_align_pytorch.py``), so targets match the official ones up to
    autocast's own rounding. bfloat16 weights are an opt-in (``dtype="bfloat16"``) for speed
    and memory: they also round the residual stream, norms and RoPE, which puts the targets
    several times further from the official ones (docs/students.md gives the measured errors
    of both). Only teachers with ``supports_reduced_weights`` accept a reduced dtype.

    ``cache_constants`` keeps per-(shape, device, dtype) constants -- normalisation
    tensors, RoPE tables, token positions, the resized position table -- across calls
    instead of rebuilding them each call (bit-identical; ``False`` exists for comparison).

    ``compile``: ``"blocks"`` runs every transformer block through ``torch.compile``
    (``"auto"``: blocks on CUDA, off elsewhere -- compiling on a CPU costs far more than it
    saves). Per block rather than the whole forward, because all blocks of one shape share
    one compiled graph (a handful of graphs for the whole network, compiled in seconds),
    early exit stays a plain Python loop, and the eager code between blocks stays
    hookable. ``compile_mode`` is passed to ``torch.compile``: ``None`` (torch's default:
    fused kernels, no CUDA graphs) is the documented choice, since CUDA graphs
    (``"reduce-overhead"``) would hand back outputs that the next call overwrites;
    ``"max-autotune-no-cudagraphs"`` trades a longer first call for tuned matmuls.
    """

    dtype: str = "auto"
    cache_constants: bool = True
    compile: str = "off"
    compile_mode: str | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_CHOICES:
            raise RocketError(f"teacher dtype {self.dtype!r} is unknown; use one of {DTYPE_CHOICES}.")
        if self.compile not in COMPILE_CHOICES:
            raise RocketError(
                f"teacher compile {self.compile!r} is unknown; use one of {COMPILE_CHOICES}."
            )

    def compiles_on(self, device: torch.device) -> bool:
        """Whether blocks run under ``torch.compile`` on ``device``."""
        return self.compile == "blocks" or (self.compile == "auto" and device.type == "cuda")


def autocast_dtype(device: torch.device, setting: str) -> torch.dtype | None:
    """The reduced-precision dtype to autocast to on ``device``, or None for full precision."""
    if setting == "off":
        return None
    if setting in ("bfloat16", "float16"):
        return getattr(torch, setting)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return None


def hash_state_dict(module: nn.Module) -> str:
    """Content hash of a module's parameters and persistent buffers (names, shapes, bytes).

    The cache keys features on this, so two runs with the same weights share entries and
    any change of weights invalidates them. Hashing 1.2 B parameters takes a few seconds,
    which is why teachers memoise the result until their weights are reloaded.
    """
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach()
        if t.device.type == "meta":
            raise RocketError(
                "the teacher's weights are not materialised; load a checkpoint first."
            )
        t = t.to("cpu").contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        if t.numel():
            digest.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


class Teacher(ABC):
    """A frozen vision model exposing per-layer patch features.

    Subclasses set ``num_layers`` (number of blocks; valid indices ``0..num_layers``),
    ``dim`` (feature width of every layer), ``patch_size`` and ``name``, keep their
    network in ``self.model`` and implement :meth:`_forward_layers` and
    :meth:`_architecture`.
    """

    name: str = "teacher"
    #: whether the network can run natively with weights in bfloat16/float16
    supports_reduced_weights: bool = False
    num_layers: int
    dim: int
    patch_size: int
    model: nn.Module

    def __init__(
        self, input_cfg: TeacherInput | None = None, runtime: TeacherRuntime | None = None
    ) -> None:
        self.input = input_cfg or TeacherInput()
        self.runtime = runtime or TeacherRuntime()
        if self.runtime.dtype not in ("auto", "float32") and not self.supports_reduced_weights:
            raise RocketError(
                f"the {self.name} teacher cannot store its weights in {self.runtime.dtype}; "
                "use TeacherRuntime(dtype='float32') and the autocast setting instead."
            )
        self._weights_hash: str | None = None

    # --- what a subclass provides -------------------------------------------------
    @abstractmethod
    def _architecture(self) -> dict:
        """A JSON-able description of the architecture (class and config), for fingerprints."""

    @abstractmethod
    def _forward_layers(self, images: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        """Run the network on ``images`` [B, S, 3, H, W] in [0, 1] and return, for each
        resolved index in ``layers`` (ascending order not guaranteed), patch features
        ``[B, S, h, w, C]``; must not run blocks deeper than ``max(layers)``."""

    # --- the shared interface -------------------------------------------------------
    @property
    def device(self) -> torch.device:
        try:
            return next(self.model.parameters()).device
        except StopIteration:  # pragma: no cover - every teacher has parameters
            return torch.device("cpu")

    def to(self, device: torch.device | str) -> Teacher:
        """Move the network (and cast it to the runtime dtype there); returns ``self``.

        Moving a teacher whose weights were cast to bfloat16 back to a float32 device
        upcasts the rounded values: the precision is not restored (reload the checkpoint).
        """
        self.model.to(device)
        self.match_weights_dtype()
        return self

    def compute_dtype(self) -> torch.dtype:
        """The dtype the weights are stored in and the network runs at (see TeacherRuntime)."""
        setting = self.runtime.dtype
        return torch.float32 if setting == "auto" else getattr(torch, setting)

    def match_weights_dtype(self) -> None:
        """Cast floating weights to :meth:`compute_dtype` if they are not there yet.

        Called on every move and before every forward, so a model moved behind the
        teacher's back (``teacher.model.to(...)``) is still brought to the runtime dtype.
        The memoised weights hash is dropped: the fingerprint describes the weights used.
        """
        if not self.supports_reduced_weights:  # always float32: leave the model as built
            return
        dtype = self.compute_dtype()
        stale = any(
            t.is_floating_point() and t.dtype != dtype
            for t in (*self.model.parameters(), *self.model.buffers())
        )
        if stale:
            self.model.to(dtype)
            self.weights_changed()

    def resolve_layers(self, layers: Sequence[int]) -> list[int]:
        """Resolve (possibly negative) indices; out-of-range ones raise a RocketError."""
        if len(layers) == 0:
            raise RocketError("no teacher layers were requested; pass at least one index.")
        return resolve_layers(list(layers), self.num_layers, what=f"{self.name} layer")

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) the network actually sees for frames of this size."""
        h, w = self.input.size if self.input.size is not None else (height, width)
        if h % self.patch_size or w % self.patch_size or h <= 0 or w <= 0:
            raise RocketError(
                f"{self.name} needs frame sides that are multiples of its patch size "
                f"{self.patch_size}, got {h}x{w}; set the teacher input size (e.g. "
                f"{_nearest_multiple(h, self.patch_size)}x{_nearest_multiple(w, self.patch_size)})."
            )
        return h, w

    def patch_grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid (rows, cols) of the features for input frames of this size."""
        h, w = self.input_size(height, width)
        return h // self.patch_size, w // self.patch_size

    def fingerprint(self) -> str:
        """Identity of the features this teacher computes: architecture, weights, input.

        The cache keys entries on it (together with the layers and the source frame), so
        anything that changes the numbers -- config, weights, resize, precision -- is in it.
        """
        self.match_weights_dtype()
        if self._weights_hash is None:
            self._weights_hash = hash_state_dict(self.model)
        payload = {
            "architecture": self._architecture(),
            "weights": self._weights_hash,
            "input_size": list(self.input.size) if self.input.size else None,
            "autocast": self.input.autocast,
        }
        dtype = self.compute_dtype()
        if dtype != torch.float32:  # absent for float32, so earlier fingerprints still match
            payload["weights_dtype"] = str(dtype).removeprefix("torch.")
        text = json.dumps(payload, sort_keys=True)
        return f"{self.name}-{hashlib.blake2b(text.encode(), digest_size=12).hexdigest()}"

    def weights_changed(self) -> None:
        """Forget the memoised weights hash (call after loading new weights)."""
        self._weights_hash = None

    def prepare(self, frames: torch.Tensor) -> torch.Tensor:
        """Check ``frames`` [B, S, 3, H, W] and resize to the teacher's input size."""
        if not isinstance(frames, torch.Tensor) or frames.ndim != 5 or frames.shape[2] != 3:
            shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames)
            raise RocketError(
                f"teacher frames must be a float tensor [B, S, 3, H, W] in [0, 1], got {shape}; "
                "stack the views on dim 1 and put channels before height and width."
            )
        if not frames.is_floating_point():
            raise RocketError(
                f"teacher frames must be floats in [0, 1], got {frames.dtype}; divide uint8 "
                "images by 255 first."
            )
        b, s, _, height, width = frames.shape
        h, w = self.input_size(height, width)
        frames = frames.to(self.device, torch.float32)
        if (h, w) != (height, width):
            frames = F.interpolate(
                frames.reshape(b * s, 3, height, width),
                size=(h, w),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            ).reshape(b, s, 3, h, w)
        return frames

    @contextlib.contextmanager
    def _inference_mode(self) -> Iterator[None]:
        """eval mode + no_grad + autocast on the teacher's device; restores training mode.

        With weights in a reduced dtype the network runs natively: autocast is switched
        *off* (also a caller's, e.g. a training step's), since it would only add casts.
        """
        was_training = self.model.training
        self.model.eval()
        device_type = self.device.type
        if self.compute_dtype() != torch.float32:
            cast = torch.autocast(device_type=device_type, enabled=False)
        else:
            dtype = autocast_dtype(self.device, self.input.autocast)
            cast = (
                torch.autocast(device_type=device_type, dtype=dtype)
                if dtype is not None
                else contextlib.nullcontext()
            )
        try:
            with torch.no_grad(), cast:
                yield
        finally:
            self.model.train(was_training)

    def features(self, frames: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Patch features of the requested layers, in the order requested.

        ``frames``: float [B, S, 3, H, W] in [0, 1], S views of one scene per sample.
        Returns one float32 tensor [B, S, h, w, C] per entry of ``layers``. Blocks deeper
        than the deepest requested layer are not run.
        """
        resolved = self.resolve_layers(layers)
        self.match_weights_dtype()
        images = self.prepare(frames)
        with self._inference_mode():
            outs = self._forward_layers(images, resolved)
        return [o.float() for o in outs]


def _nearest_multiple(value: int, base: int) -> int:
    return max(base, int(round(value / base)) * base)
