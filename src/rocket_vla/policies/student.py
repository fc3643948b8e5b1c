"""The Student interface: everything training, evaluation and the analyses need from a VLA.

Why one small base class: the trainer, ``rocket eval``, ``rocket profile`` and the demo must
work for MiniVLA, pi0 and OFT-style students alike, so they talk to a student only through
the members below. A new student is one file: a subclass that sets ``config_class`` (a
:class:`~rocket_vla.dictconfig.DictConfig` dataclass), builds itself from that config in
``__init__``, fills in :meth:`~Student.prepare`, :meth:`~Student.visual_index`,
:meth:`~Student.action_loss` and :meth:`~Student.predict`, and registers itself with
``@register_student("kind")``. A file under ``rocket_vla/policies/`` is found by its kind
without editing anything else; a file elsewhere is registered by importing it.

Conventions shared by every student:

* the batch handed to :meth:`Student.prepare` is the library's, not the model's: images
  float ``[B, S, 3, H, W]`` in [0, 1] at ``image_size`` (already cropped/augmented),
  proprio ``[B, proprio_dim]`` and actions ``[B, chunk, action_dim]`` *normalised* (q01/q99,
  ``data.normalize``), ``action_mask`` ``[B, chunk]`` and the raw instruction strings. The
  student tokenises and pads to its own widths there; it returns and predicts *normalised*
  actions of the data's ``action_dim`` (LIBERO: 7, gripper last).
* hidden-state index ``k`` is the stream after block ``k`` of ``blocks_path`` (0 = the
  embeddings), as everywhere in rocket-vla; :meth:`visual_index` says which tokens of that
  stream are the image tokens.
* LoRA (:func:`apply_lora`) is injected in place with PEFT, so module paths (and with them
  ``blocks_path`` and the taps) stay valid; the adapted student's state dict gains PEFT's
  ``base_layer``/``lora_A``/``lora_B`` keys, which a checkpoint records by saving the LoRA
  settings next to the student's kind and config.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import pkgutil
import re
from abc import ABCMeta, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from rocket_vla.dictconfig import DictConfig
from rocket_vla.errors import RocketError

#: Tokenizer and processor files a pretrained folder may hold (transformers' names); the
#: weights and config.json are not among them (checkpoints store the student's own).
ASSET_NAMES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
               "added_tokens.json", "vocab.json", "merges.txt", "preprocessor_config.json",
               "processor_config.json", "chat_template.json", "chat_template.jinja")

class _Registry(dict[str, str]):
    """kind -> the module that registers it. ``kind in REGISTRY`` looks through the package's
    modules when the kind is not listed yet, so a student in a new file answers every check
    (``rocket train --student KIND`` included) without an edit elsewhere."""

    def __contains__(self, kind: object) -> bool:
        if not dict.__contains__(self, kind):
            discover_students()
        return dict.__contains__(self, kind)


#: The built-in students are listed by module so that listing kinds imports no model code (pi0
#: and OFT pull in transformers' VLM classes) and asking for one imports only its own module;
#: :func:`register_student` adds every other kind it sees.
REGISTRY = _Registry({
    "minivla": "rocket_vla.policies.minivla",
    "pi0": "rocket_vla.policies.pi0",
    "pi05": "rocket_vla.policies.pi05",
    "oft": "rocket_vla.policies.oft",
})
_CLASSES: dict[str, type[Student]] = {}
_KIND = re.compile(r"[a-z][a-z0-9_.-]*")

#: What the trainer, the taps and evaluation read from every student; each must be set (as an
#: attribute or a property) by the end of ``__init__``, which construction checks by name.
REQUIRED_MEMBERS = ("blocks_path", "depth", "width", "num_cameras", "image_size", "image_grid",
                    "chunk", "action_dim", "proprio_dim")

S = TypeVar("S", bound="type[Student]")


class _StudentMeta(ABCMeta):
    """Checks a student right after its ``__init__``, so a member it forgot to set is named
    at construction instead of failing deep inside the trainer."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        student = super().__call__(*args, **kwargs)
        student.check_members()
        return student


def _is_abstract(cls: type) -> bool:
    """Whether ``cls`` still leaves one of :class:`Student`'s abstract methods unimplemented
    (``ABCMeta`` computes ``__abstractmethods__`` only after ``__init_subclass__`` runs)."""
    return any(getattr(getattr(cls, name, None), "__isabstractmethod__", False)
               for name in Student.__abstractmethods__)


class Student(nn.Module, metaclass=_StudentMeta):
    """Abstract base of every student (see the module docstring for the batch conventions).

    A subclass sets ``config_class``, builds itself from an instance of it in ``__init__``
    (storing it as ``self.config``), sets the :data:`REQUIRED_MEMBERS` (plain attributes or
    properties) and implements the four abstract methods. Everything else has a default that
    suits a model whose language model *is* ``blocks_path``.
    """

    kind: ClassVar[str]  # set by @register_student
    #: the dataclass of the student's settings (what ``config_dict`` holds); its fields are the
    #: keys ``rocket train --student_config.KEY VALUE`` may set
    config_class: ClassVar[type[DictConfig]]
    config: Any  # the config_class instance the student was built from
    blocks_path: str  # dotted path from self to the ModuleList of blocks (LayerTaps)
    final_path: str | None = None  # module whose input is the stream after the last block
    depth: int  # number of blocks
    width: int  # residual width
    num_cameras: int  # images per sample
    image_size: int  # square side of the images prepare() takes
    image_grid: tuple[int, int]  # visual tokens per camera (rows, cols), row-major
    chunk: int  # actions predicted per call
    action_dim: int  # the REAL dims of the data (a model may pad internally)
    proprio_dim: int
    default_execute: int | None = None  # actions of a chunk run before replanning (None: all)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if _is_abstract(cls):
            return
        config = getattr(cls, "config_class", None)
        if not (isinstance(config, type) and dataclasses.is_dataclass(config)
                and issubclass(config, DictConfig)):
            raise TypeError(f"{cls.__qualname__} must set config_class to a DictConfig dataclass "
                            "(the settings it is built from and checkpoints record).")

    def check_members(self) -> None:
        """Refuse a student whose ``__init__`` left a required member unset, naming it."""
        missing = [name for name in REQUIRED_MEMBERS if not hasattr(self, name)]
        if not isinstance(getattr(self, "config", None), self.config_class):
            missing.insert(0, "config")
        if missing:
            raise TypeError(f"{type(self).__qualname__}.__init__ does not set "
                            f"{', '.join(missing)}; every Student sets {', '.join(REQUIRED_MEMBERS)} "
                            "and self.config.")
        try:
            blocks = self.get_submodule(self.blocks_path)
        except AttributeError:
            blocks = None
        if not isinstance(blocks, nn.ModuleList) or len(blocks) != self.depth:
            raise TypeError(f"{type(self).__qualname__}.blocks_path {self.blocks_path!r} must name a "
                            f"ModuleList of depth={self.depth} blocks.")

    # -- batches ---------------------------------------------------------------------
    @abstractmethod
    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Our batch -> model inputs on this student's device (tokenisation happens here).

        Keys: ``images``, ``proprio``, ``instructions`` always; ``actions`` and
        ``action_mask`` when training (absent at evaluation)."""

    @abstractmethod
    def visual_index(self, inputs: dict[str, Any]) -> list[tuple[int, int]] | torch.Tensor:
        """Where the image tokens sit in the block stream: static ``(start, stop)`` spans, or a
        ``[B, T]`` index tensor (``LayerTaps.token_index``) found from the model's own
        image-token ids. Camera-major, each camera row-major over ``image_grid``."""

    @abstractmethod
    def action_loss(self, inputs: dict[str, Any]) -> torch.Tensor:
        """One forward pass and the student's own action loss (a scalar); taps capture here."""

    @abstractmethod
    def predict(self, inputs: dict[str, Any]) -> torch.Tensor:
        """Normalised action chunk ``[B, chunk, action_dim]`` (no gradients; for evaluation)."""

    # -- rebuilding ------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        """JSON-able description that :meth:`from_config` rebuilds the architecture from."""
        return self.config.to_dict()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Student:
        """A randomly initialised student of the architecture ``config`` describes."""
        return cls(cls.config_class.from_dict(dict(config)))

    @classmethod
    def build(cls, preset: str | None = None, path: str | None = None, **overrides: Any) -> Student:
        """A student from a size preset (random weights) or, where supported, a local
        pretrained checkpoint ``path``. Subclasses with presets or pretrained loading override it."""
        if path is not None:
            raise RocketError(
                f"the {cls.kind} student cannot load pretrained weights from a path; drop "
                "--student_path or pick a student that supports it."
            )
        if preset is not None:
            raise RocketError(f"the {cls.kind} student has no presets; drop --student_preset.")
        return cls.from_config(dict(overrides))

    def asset_files(self) -> list[Path]:
        """Files besides the weights that rebuilding this student reads (tokenizer, processor).

        Checkpoints copy them (``step_*/student/``) and :func:`load_student` reads the copies,
        so a run folder moved to another machine loads without the original ``student_path``.
        Default: the :data:`ASSET_NAMES` present in the config's ``student_path``."""
        path = getattr(getattr(self, "config", None), "student_path", None)
        if not path:
            return []
        return [Path(path) / name for name in ASSET_NAMES if (Path(path) / name).is_file()]

    # -- LoRA ------------------------------------------------------------------------
    def lora_targets(self) -> list[str]:
        """Full names of the ``nn.Linear`` modules that get LoRA adapters: by default every
        linear layer inside the blocks (the language model's linear layers)."""
        return self.linear_layers(self.blocks_path)

    def linear_layers(self, *paths: str) -> list[str]:
        """Full names of the ``nn.Linear`` modules under any of the module ``paths``."""
        prefixes = tuple(path + "." for path in paths)
        return [name for name, module in self.named_modules()
                if name.startswith(prefixes) and isinstance(module, nn.Linear)]

    def full_train(self) -> list[str]:
        """Parameter-name prefixes trained in full under LoRA (the action head and the other
        new, task-specific parts). Everything else outside the adapters is frozen."""
        return []

    # -- memory ----------------------------------------------------------------------
    def enable_gradient_checkpointing(self) -> None:
        """Recompute block activations during backward (memory for time; the taps ignore the
        recomputation). Default: the outermost transformers model inside the student."""
        for module in self.modules():
            if module is not self and getattr(module, "supports_gradient_checkpointing", False):
                enable = getattr(module, "activation_checkpointing_enable", None)
                if enable is not None:  # transformers >= 5.24 (the old name is deprecated)
                    enable(activation_checkpointing_kwargs={"use_reentrant": False})
                else:
                    module.gradient_checkpointing_enable(
                        gradient_checkpointing_kwargs={"use_reentrant": False})
                return
        raise RocketError(
            f"the {self.kind} student does not support gradient checkpointing; drop "
            "--gradient_checkpointing."
        )

    # -- conveniences ----------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def num_parameters(self, trainable: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable)


def register_student(kind: str) -> Callable[[S], S]:
    """Class decorator: make ``kind`` (``rocket train --student KIND``) build this student.

    Put it on the class in the student's own file; a file under ``rocket_vla/policies/`` is
    found without further edits, any other file is registered by importing it."""
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise TypeError(f"student kind {kind!r} must be lower-case letters, digits, '_', '.' or '-'.")

    def decorate(cls: S) -> S:
        if not (isinstance(cls, type) and issubclass(cls, Student)) or _is_abstract(cls):
            raise TypeError(f"@register_student({kind!r}) decorates {cls!r}, which is not a concrete "
                            "Student subclass.")
        known = _CLASSES.get(kind)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise TypeError(f"student kind {kind!r} is taken by {known.__module__}.{known.__qualname__}; "
                            f"register {cls.__qualname__} under another kind.")
        cls.kind = kind
        _CLASSES[kind] = cls
        REGISTRY.setdefault(kind, cls.__module__)
        return cls

    return decorate


def discover_students() -> list[str]:
    """Import every module of this package (finding students added as new files) and return
    every registered kind, sorted."""
    package = importlib.import_module("rocket_vla.policies")
    for info in pkgutil.iter_modules(package.__path__, "rocket_vla.policies."):
        try:
            importlib.import_module(info.name)
        except ImportError:
            continue  # an optional student whose extra is not installed: the others still answer
    return sorted(REGISTRY)


def student_class(kind: str) -> type[Student]:
    """The class registered under ``kind``: its module is imported on first use; a kind that no
    known module registers is looked for in every module of the package."""
    if kind not in _CLASSES and kind in REGISTRY:  # `in` looks through the package
        try:
            importlib.import_module(REGISTRY[kind])
        except ImportError as err:
            raise RocketError(f"cannot import the {kind} student ({err}); install "
                              "rocket-vla[students].") from err
    if kind not in _CLASSES:
        kinds = ", ".join(sorted(REGISTRY))
        raise RocketError(f"unknown student {kind!r}; choose one of {kinds}.")
    return _CLASSES[kind]


def build_student(kind: str, preset: str | None = None, path: str | None = None,
                  **overrides: Any) -> Student:
    """A student by registry name: a preset (random init), or a local pretrained ``path``.

    ``overrides`` set fields of the student's config (``--student_config.KEY VALUE``); a key
    the config lacks is refused here, by name, before anything is built."""
    cls = student_class(kind)
    if overrides:
        if "student_path" in overrides:
            raise RocketError("give the pretrained folder with --student_path DIR, not as a "
                              "--student_config key.")
        fields = sorted(f.name for f in dataclasses.fields(cls.config_class) if f.name != "student_path")
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise RocketError(f"the {kind} student has no setting {', '.join(map(repr, unknown))}; "
                              f"--student_config keys are {', '.join(fields)}.")
    return cls.build(preset=preset, path=path, **overrides)


def student_from_config(kind: str, config: dict[str, Any]) -> Student:
    """Rebuild the architecture a checkpoint recorded (random init; load weights after)."""
    return student_class(kind).from_config(config)


# ----------------------------------------------------------------------------- LoRA
def apply_lora(student: Student, rank: int, alpha: float | None = None, dropout: float = 0.0
               ) -> Student:
    """Inject LoRA adapters (PEFT) into ``student.lora_targets()`` in place and freeze the rest.

    Trainable afterwards: the adapters and the parameters under ``student.full_train()``.
    In-place injection keeps every module path, so ``blocks_path`` and the taps still find
    the blocks. ``alpha`` defaults to ``rank`` (scale 1)."""
    if rank < 1:
        raise RocketError(f"LoRA rank must be at least 1, got {rank}; use 0 for full fine-tuning.")
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as err:  # pragma: no cover - peft ships with the students extra
        raise RocketError(f"LoRA needs peft ({err}); install rocket-vla[students].") from err
    targets = student.lora_targets()
    if not targets:
        raise RocketError(
            f"the {student.kind} student names no linear layers for LoRA; train it with "
            "--lora_rank 0."
        )
    # full module names: PEFT matches a name or a dotted suffix, and no module's full name is
    # a dotted suffix of another's, so exactly these modules are adapted
    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank,
                        lora_dropout=dropout, target_modules=list(targets), bias="none")
    inject_adapter_in_model(config, student)
    full = tuple(student.full_train())
    for name, p in student.named_parameters():
        p.requires_grad_("lora_" in name or (bool(full) and name.startswith(full)))
    return student


def lora_settings(rank: int, alpha: float | None = None) -> dict[str, Any] | None:
    """What a checkpoint records to re-inject the same adapters before loading weights."""
    if rank <= 0:
        return None
    return {"rank": int(rank), "alpha": float(alpha if alpha is not None else rank)}


# ----------------------------------------------------------------------------- checkpoints
#: The one checkpoint format `rocket train` writes: config.json holds
#: {"format", "student": {"kind", "config", "lora"}, "train", "align", "stats", "step"} and
#: model.safetensors the weights, the student's under "policy." and the aligner's under "aligner.".
CHECKPOINT_FORMAT = "rocket-vla/checkpoint/2"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def find_checkpoint(path: str | Path) -> Path:
    """A ``step_*`` folder from itself, its ``checkpoints/`` parent or a run folder."""
    from rocket_vla.weights import locate_checkpoint

    return locate_checkpoint(path)


def student_spec(saved: dict[str, Any], where: Any = "the checkpoint") -> dict[str, Any]:
    """``{"kind", "config", "lora"}`` of a checkpoint's config.json."""
    fmt = saved.get("format")
    if fmt == CHECKPOINT_FORMAT and isinstance(saved.get("student"), dict):
        spec = saved["student"]
        return {"kind": spec["kind"], "config": spec["config"], "lora": spec.get("lora")}
    raise RocketError(
        f"{where} is not a `rocket train` checkpoint (format {fmt!r}); pass one written by "
        "`rocket train`."
    )


def student_from_spec(spec: dict[str, Any]) -> Student:
    """The architecture a checkpoint recorded, with its LoRA adapters, randomly initialised."""
    student = student_from_config(spec["kind"], spec["config"])
    if spec.get("lora"):
        apply_lora(student, int(spec["lora"]["rank"]), float(spec["lora"]["alpha"]))
    return student


def load_student(path: str | Path, device: str | torch.device = "cpu"
                 ) -> tuple[Student, dict[str, Any]]:
    """The student of a checkpoint (weights matched strictly, eval mode) and its config.json."""
    from rocket_vla.fingerprint import file_digest
    from rocket_vla.weights import (
        STUDENT_ASSETS,
        check_asset_digests,
        check_config_digest,
        load_strict,
        read_safetensors,
    )

    ckpt = find_checkpoint(path)
    try:
        saved = json.loads((ckpt / CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RocketError(f"{ckpt / CONFIG_FILE} is unreadable ({type(err).__name__}); the "
                          "checkpoint is damaged -- pass another step_* folder or retrain.") from err
    if not isinstance(saved, dict):
        saved = {}
    check_config_digest(saved, ckpt / CONFIG_FILE, "pass another step_* folder or retrain.",
                        required=False)
    spec = student_spec(saved, ckpt)
    assets = ckpt / STUDENT_ASSETS
    if assets.is_dir() and isinstance(spec["config"], dict) and "student_path" in spec["config"]:
        # the checkpoint's own copy of the tokenizer/processor files, not the folder it was
        # trained from (which may be gone, or elsewhere on another machine)
        check_asset_digests(saved, ckpt)
        spec = {**spec, "config": {**spec["config"], "student_path": str(assets)}}
    student = student_from_spec(spec)
    weights = ckpt / WEIGHTS_FILE
    expected = (saved.get("digests") or {}).get(WEIGHTS_FILE)
    if expected is not None and file_digest(weights) != expected:
        raise RocketError(f"{weights} is damaged (its checksum does not match the one recorded when "
                          "it was saved); pass another step_* folder or retrain.")
    tensors = read_safetensors(weights)
    state = {k[len("policy."):]: v for k, v in tensors.items() if k.startswith("policy.")}
    load_strict(student, state, f"{ckpt} (its recorded {student.kind} config)",
                "the checkpoint is damaged or from another version.")
    return student.to(device).eval(), saved
