"""The Student interface: everything training, evaluation and the analyses need from a VLA.

Why one small base class: the trainer, ``rocket eval``, ``rocket profile`` and the demo must
work for MiniVLA, pi0 and OFT-style students alike, so they talk to a student only through
the members below. A new student is one file in ``policies/`` (a subclass) plus one line in
:data:`REGISTRY`.

Conventions shared by every student:

* the batch handed to :meth:`Student.prepare` is the library's, not the model's: images
  float ``[B, S, 3, H, W]`` in [0, 1] at ``image_size`` (already cropped/augmented),
  proprio ``[B, 8]`` and actions ``[B, chunk, 7]`` *normalised* (q01/q99, ``data.normalize``),
  ``action_mask`` ``[B, chunk]`` and the raw instruction strings. The student tokenises and
  pads to its own widths there; it returns and predicts *normalised* 7-dim actions.
* hidden-state index ``k`` is the stream after block ``k`` of ``blocks_path`` (0 = the
  embeddings), as everywhere in rocket-vla; :meth:`visual_index` says which tokens of that
  stream are the image tokens.
* LoRA (:func:`apply_lora`) is injected in place with PEFT, so module paths (and with them
  ``blocks_path`` and the taps) stay valid; the adapted student's state dict gains PEFT's
  ``base_layer``/``lora_A``/``lora_B`` keys, which a checkpoint records by saving the LoRA
  settings next to the student's kind and config.
"""

from __future__ import annotations

import importlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Collection
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from rocket_vla.errors import RocketError

#: Tokenizer and processor files a pretrained folder may hold (transformers' names); the
#: weights and config.json are not among them (checkpoints store the student's own).
ASSET_NAMES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
               "added_tokens.json", "vocab.json", "merges.txt", "preprocessor_config.json",
               "processor_config.json", "chat_template.json", "chat_template.jinja")

#: kind -> "module:Class". Import paths, so that listing students imports no model code
#: (pi0 and OFT pull in transformers' VLM classes).
REGISTRY: dict[str, str] = {
    "minivla": "rocket_vla.policies.minivla:MiniVLA",
    "pi0": "rocket_vla.policies.pi0:PI0Student",
    "pi05": "rocket_vla.policies.pi05:PI05Student",
    "oft": "rocket_vla.policies.oft:OFTStudent",
}


class Student(nn.Module, ABC):
    """Abstract base of every student (see the module docstring for the batch conventions).

    Subclasses set the class/instance attributes below (plain attributes or properties) and
    implement the abstract methods. ``lora_targets`` and ``full_train`` have defaults that
    suit a model whose language model *is* ``blocks_path``.
    """

    kind: ClassVar[str]
    #: the dataclass of the student's settings (what ``config_dict`` holds); its fields are the
    #: keys ``rocket train --student_config.KEY VALUE`` may set
    config_class: ClassVar[type]
    blocks_path: str  # dotted path from self to the ModuleList of blocks (LayerTaps)
    final_path: str | None = None  # module whose input is the stream after the last block
    depth: int  # number of blocks
    width: int  # residual width
    num_cameras: int  # images per sample (LIBERO: agentview + wrist)
    image_size: int  # square side of the images prepare() takes
    image_grid: tuple[int, int]  # visual tokens per camera (rows, cols), row-major
    chunk: int  # actions predicted per call
    action_dim: int = 7  # the REAL dims of the data (a model may pad internally)
    proprio_dim: int = 8
    default_execute: int | None = None  # actions of a chunk run before replanning (None: all)
    align_weight: float = 0.5  # default lambda when TrainConfig.align_weight is None (paper: 0.5)
    align_layout: str | None = None  # key of align.config.PAPER_PAIRS with this student's pairs

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
    @abstractmethod
    def config_dict(self) -> dict[str, Any]:
        """JSON-able description that :meth:`from_config` rebuilds the architecture from."""

    @classmethod
    @abstractmethod
    def from_config(cls, config: dict[str, Any]) -> Student:
        """A randomly initialised student of the architecture ``config`` describes."""

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
        prefix = self.blocks_path + "."
        return [name for name, module in self.named_modules()
                if name.startswith(prefix) and isinstance(module, nn.Linear)]

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


def student_class(kind: str) -> type[Student]:
    """The class registered under ``kind`` (imported on first use)."""
    path = REGISTRY.get(kind)
    if path is None:
        raise RocketError(f"unknown student {kind!r}; choose one of {', '.join(sorted(REGISTRY))}.")
    module, _, name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise RocketError(
            f"cannot import the {kind} student ({err}); install rocket-vla[students] or fix "
            "the registry entry."
        ) from err
    if not (isinstance(cls, type) and issubclass(cls, Student)):
        raise RocketError(f"registry entry {path!r} is not a Student subclass; fix the registry.")
    return cls


def build_student(kind: str, preset: str | None = None, path: str | None = None,
                  **overrides: Any) -> Student:
    """A student by registry name: a preset (random init), or a local pretrained ``path``.

    ``overrides`` set fields of the student's config (``--student_config.KEY VALUE``); a key
    the config lacks is refused here, by name, before anything is built."""
    cls = student_class(kind)
    if overrides:
        import dataclasses

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
    pattern = "^(" + "|".join(re.escape(t) for t in targets) + ")$"
    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank,
                        lora_dropout=dropout, target_modules=pattern, bias="none")
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
#: MiniVLA-only checkpoints written before the Student interface ("model" = MiniVLA config).
LEGACY_FORMAT = "rocket-vla/minivla-checkpoint/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def find_checkpoint(path: str | Path) -> Path:
    """A ``step_*`` folder from itself, its ``checkpoints/`` parent or a run folder."""
    from rocket_vla.weights import locate_checkpoint

    return locate_checkpoint(path)


def student_spec(saved: dict[str, Any], where: Any = "the checkpoint") -> dict[str, Any]:
    """``{"kind", "config", "lora"}`` of a checkpoint's config.json (either format)."""
    fmt = saved.get("format")
    if fmt == CHECKPOINT_FORMAT and isinstance(saved.get("student"), dict):
        spec = saved["student"]
        return {"kind": spec["kind"], "config": spec["config"], "lora": spec.get("lora")}
    if fmt == LEGACY_FORMAT and isinstance(saved.get("model"), dict):
        return {"kind": "minivla", "config": saved["model"], "lora": None}
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


def load_local_pretrained(model_cls: Any, path: str, what: str, fix: str,
                          model_types: Collection[str] | None = None) -> Any:
    """``model_cls.from_pretrained(path, local_files_only=True)`` (nothing is downloaded), checked.

    Why the checks: transformers builds whatever ``config.json`` describes and fills every
    weight the folder lacks with random values, printing only a warning. A folder of another
    model (a Llama given as pi0) would build a random model of that size and train it; a
    badly converted checkpoint would train with random layers. So the folder's ``model_type``
    must be one of ``model_types`` (read before any weight is allocated), and every weight the
    model has must come from the folder with nothing left over (after transformers' own key
    renaming, e.g. LeRobot's ``paligemma_with_expert.*`` names for pi0).
    """
    folder = Path(path)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise RocketError(f"{folder} has no config.json, so it is not a transformers checkpoint "
                          f"folder; {fix}")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise RocketError(f"{config_file} is not a valid JSON object; re-download or re-export the "
                          f"checkpoint ({fix})") from None
    if model_types is not None and model_type not in model_types:
        raise RocketError(f"{folder} holds a {model_type!r} model, not {what} (model_type must be "
                          f"{' or '.join(repr(t) for t in sorted(model_types))}); {fix}")
    try:
        # mismatched shapes are collected (not raised) so that one message lists every difference
        model, info = model_cls.from_pretrained(path, local_files_only=True, output_loading_info=True,
                                                ignore_mismatched_sizes=True)
    except (OSError, ValueError) as err:
        raise RocketError(f"cannot load {what} from {path} ({type(err).__name__}: {err}); {fix}") from None
    problems = []
    for label, key in (("missing", "missing_keys"), ("unexpected", "unexpected_keys"),
                       ("of another shape", "mismatched_keys")):
        names = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get(key) or ())
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            problems.append(f"{len(names)} weights {label} ({shown})")
    if problems:
        raise RocketError(f"{folder} does not hold a complete {what}: {'; '.join(problems)}; convert "
                          "the checkpoint to the transformers layout or point --student_path at the "
                          "right folder.")
    return model
