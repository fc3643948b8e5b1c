"""Create, open and read a teacher-feature cache directory (its format: :mod:`.cache_format`).

:class:`FeatureCache` is what `rocket cache-teacher` fills and training reads;
:func:`fingerprint_files` is the dataset key both compare, so a cache is never read for
another dataset's frames. A file that is truncated, fails its checksum, or carries another spec key (stale) is
never used: reading raises a RocketError naming the fix, and filling recomputes it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rocket_vla.errors import RocketError
from rocket_vla.fingerprint import check_same_code, code_changes, code_version
from rocket_vla.teachers.cache_files import (
    atomic_write_bytes,
    disk_full_is_one_sentence,
    remove_dead_temp_files,
)
from rocket_vla.teachers.cache_format import CacheSpec, checksum, entry_stem, spec_diff, tensor_name
from rocket_vla.teachers.cache_writer import EntryWriter


def fingerprint_files(paths: Iterable[str | Path]) -> str:
    """Content fingerprint of dataset files (names and content).

    Keying on content rather than paths or modification times means a copied dataset
    keeps its cache and an edited one invalidates it. An HDF5 file is keyed by what it holds
    (every group's and dataset's name, attributes, dtype, shape and values), not its bytes:
    HDF5 lays the same content out differently from one write to the next, and demonstrations
    re-collected by the same code on another machine must key the same as the first ones.
    """
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(Path(p) for p in paths):
        if not path.is_file():
            raise RocketError(f"dataset file {path} does not exist; check the dataset path.")
        if path.suffix in HDF5_SUFFIXES:
            digest.update(f"{path.name}:hdf5".encode())
            _hdf5_content(path, digest)
            continue
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


HDF5_SUFFIXES = (".hdf5", ".h5")


def _hdf5_content(path: Path, digest: Any) -> None:
    """Feed ``digest`` an HDF5 file's content in a fixed (sorted) order."""
    import h5py
    import numpy as np

    def value(v: object) -> bytes:
        arr = np.asarray(v)
        body = repr(arr.tolist()).encode() if arr.dtype == object else arr.tobytes()
        return f"{arr.dtype.str}{arr.shape}".encode() + b"\0" + body

    try:
        with h5py.File(path, "r") as handle:
            names: list[str] = []
            handle.visit(names.append)
            for name in ["", *sorted(names)]:
                obj = handle[name] if name else handle
                digest.update(b"\1" + name.encode() + b"\0")
                for key in sorted(obj.attrs):
                    digest.update(key.encode() + b"\0" + value(obj.attrs[key]))
                if isinstance(obj, h5py.Dataset):
                    digest.update(b"\2" + value(obj[()]))
    except OSError as exc:
        raise RocketError(f"dataset file {path} cannot be read as HDF5 ({exc}); collect it again or "
                          "remove it.") from exc


class CacheEntryError(RocketError):
    """A cache entry that must not be used (missing, truncated, corrupt or stale)."""

    def __init__(self, episode: str, problem: str, path: Path) -> None:
        self.episode, self.problem, self.path = episode, problem, path
        super().__init__(
            f"teacher cache entry for episode {episode!r} is {problem} ({path}); rerun "
            "`rocket cache-teacher` on this dataset to recompute it."
        )


@dataclass
class _OpenEntry:
    handle: object
    mtime_ns: tuple[int, int, int]  # (mtime, size, inode): reopen when the file changes
    meta: dict
    verified: set[str] = field(default_factory=set)  # tensors checksummed by this process


class FeatureCache:
    """A directory of cached teacher features for one :class:`CacheSpec`."""

    def __init__(self, root: str | Path, spec: CacheSpec, *, max_open: int = 16) -> None:
        self.root = Path(root)
        self.spec = spec
        self._key = spec.key()
        self._open: OrderedDict[Path, _OpenEntry] = OrderedDict()
        self._max_open = max_open
        self._lock = threading.Lock()
        # Tensors whose checksum this process has checked, per file version: outlives the
        # open-file LRU so an evicted entry is not re-verified.
        self._verified: dict[Path, tuple[tuple[int, int, int], set[str]]] = {}

    # --- creation and opening --------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, spec: CacheSpec, *, overwrite: bool = False) -> FeatureCache:
        """Open ``root`` for filling with ``spec``; a directory built for another spec or by
        other rocket-vla code is an error unless ``overwrite`` (which deletes its entries).
        Temporary files of killed fills are removed."""
        root = Path(root)
        manifest = root / "manifest.json"
        if manifest.is_file():
            try:
                old = cls._read_manifest(root)
            except RocketError:
                if not overwrite:
                    raise
                old = None
            if (old is None or old.key() != spec.key()) and not overwrite:
                raise RocketError(
                    f"the teacher cache at {root} was built for another teacher, layer set, "
                    f"camera set or dataset ({spec_diff(old, spec) if old else 'unknown'}); "
                    "pass a new directory or --overwrite."
                )
            other_code = bool(code_changes(_manifest_code(root)))
            if other_code and not overwrite:
                check_same_code(_manifest_code(root), f"the teacher cache at {root}",
                                "pass a new directory or --overwrite to recompute it.")
            if old is None or old.key() != spec.key() or other_code:
                for path in (root / "episodes").glob("*.safetensors"):
                    path.unlink()
        with disk_full_is_one_sentence(root):
            (root / "episodes").mkdir(parents=True, exist_ok=True)
            remove_dead_temp_files(root)
            atomic_write_bytes(manifest, json.dumps(
                {**spec.to_json(), "code_version": code_version()}, indent=2).encode())
        return cls(root, spec)

    @classmethod
    def open(cls, root: str | Path, expected: CacheSpec | None = None) -> FeatureCache:
        """Open an existing cache for reading; with ``expected``, a different spec is stale."""
        root = Path(root)
        spec = cls._read_manifest(root)
        if expected is not None and expected.key() != spec.key():
            raise RocketError(
                f"the teacher cache at {root} is stale for this run "
                f"({spec_diff(spec, expected)}); rerun `rocket cache-teacher` with the current "
                "teacher and layers."
            )
        return cls(root, spec)

    @staticmethod
    def _read_manifest(root: Path) -> CacheSpec:
        manifest = root / "manifest.json"
        if not manifest.is_file():
            raise RocketError(
                f"{root} is not a teacher cache (no manifest.json); run `rocket cache-teacher` "
                "first."
            )
        try:
            data = json.loads(manifest.read_text())
            spec = CacheSpec.from_json(data)
        except (ValueError, KeyError, TypeError) as err:
            raise RocketError(
                f"the teacher cache manifest {manifest} is unreadable ({err}); delete the "
                "directory and rerun `rocket cache-teacher`."
            ) from err
        if data.get("key") != spec.key():
            raise RocketError(
                f"the teacher cache manifest {manifest} fails its own checksum; delete the "
                "directory and rerun `rocket cache-teacher`."
            )
        return spec

    def check_code(self, fix: str) -> None:
        """Refuse a cache filled by other rocket-vla code: teacher wrappers, frame
        preprocessing and the entry layout are code, so its features may differ from what
        this code would compute even though its spec matches."""
        check_same_code(_manifest_code(self.root), f"the teacher cache at {self.root}", fix)

    # --- paths and status ----------------------------------------------------------------
    @property
    def layers(self) -> tuple[int, ...]:
        return self.spec.layers

    def path(self, episode: str) -> Path:
        return self.root / "episodes" / f"{entry_stem(episode)}.safetensors"

    def episodes(self) -> list[str]:
        """Episode ids of every readable entry (from the files' headers)."""
        found = []
        for path in sorted((self.root / "episodes").glob("*.safetensors")):
            try:
                found.append(self._entry(path, None).meta["episode"])
            except CacheEntryError:
                continue
        return found

    def _entry(self, path: Path, episode: str | None) -> _OpenEntry:
        """Open (or reuse) a file and check its header; raises CacheEntryError."""
        from safetensors import safe_open

        label = episode if episode is not None else path.stem
        try:
            stat = path.stat()
            mtime = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except FileNotFoundError:
            raise CacheEntryError(label, "missing", path) from None
        with self._lock:
            cached = self._open.get(path)
            if cached is not None and cached.mtime_ns == mtime:
                self._open.move_to_end(path)
                return cached
            verified = self._verified.get(path)
        try:
            handle = safe_open(str(path), framework="pt", device="cpu")
            meta = dict(handle.metadata() or {})
            meta["checksums"] = json.loads(meta["checksums"])
            meta["steps"] = json.loads(meta["steps"])
        except Exception as err:  # noqa: BLE001 - any parse failure means a damaged file
            problem = f"truncated or corrupt ({type(err).__name__})"
            raise CacheEntryError(label, problem, path) from err
        if meta.get("spec") != self._key:
            raise CacheEntryError(label, "stale (computed for another teacher or layer set)", path)
        if episode is not None and meta.get("episode") != episode:
            raise CacheEntryError(label, f"for another episode ({meta.get('episode')!r})", path)
        keys = set(handle.keys())
        if keys != set(meta["checksums"]):
            raise CacheEntryError(label, "incomplete (tensor list does not match its header)", path)
        entry = _OpenEntry(handle=handle, mtime_ns=mtime, meta=meta)
        if verified is not None and verified[0] == mtime:  # reopened after eviction: same file
            entry.verified = verified[1]
        with self._lock:
            self._open[path] = entry
            self._verified[path] = (mtime, entry.verified)
            while len(self._open) > self._max_open:
                self._open.popitem(last=False)
        return entry

    def check(self, episode: str, num_steps: int | None = None, *, verify: bool = False) -> str:
        """``"ok"``, or why the entry cannot be used: missing/corrupt/stale/incomplete.

        ``verify`` also recomputes every checksum (reads the whole file).
        """
        path = self.path(episode)
        if not path.exists():
            return "missing"
        try:
            entry = self._entry(path, episode)
            if num_steps is not None and len(entry.meta["steps"]) != num_steps:
                return "incomplete"
            if verify:
                for name, crc in entry.meta["checksums"].items():
                    if checksum(entry.handle.get_tensor(name)) != crc:  # type: ignore[attr-defined]
                        return "corrupt (checksum mismatch)"
        except CacheEntryError as err:
            return err.problem
        return "ok"

    def verify(self) -> dict[str, str]:
        """Check every file in the directory; returns {file name: problem} for bad ones."""
        bad: dict[str, str] = {}
        for path in sorted((self.root / "episodes").glob("*.safetensors")):
            try:
                entry = self._entry(path, None)
                for name, crc in entry.meta["checksums"].items():
                    if checksum(entry.handle.get_tensor(name)) != crc:  # type: ignore[attr-defined]
                        bad[path.name] = f"corrupt (checksum mismatch in {name})"
                        break
            except CacheEntryError as err:
                bad[path.name] = err.problem
        return bad

    # --- reading and writing ---------------------------------------------------------------
    def read(
        self, episode: str, steps: Sequence[int], *, verify: bool | None = None
    ) -> list[torch.Tensor]:
        """Features of ``steps`` of ``episode``: one float16 tensor [N, S, h, w, C] per layer,
        S = the spec's cameras in order -- the layout of ``Teacher.features``.

        ``verify``: None (default) checks each tensor's checksum the first time this process
        reads it -- a flipped byte is caught before it reaches training, and later epochs
        pay nothing (docs/benchmarks.md measures the cost); True checks on every read;
        False never (only for measuring what checking costs)."""
        path = self.path(episode)
        entry = self._entry(path, episode)
        per_step = []
        for step in steps:
            views = []
            for camera in self.spec.cameras:
                name = tensor_name(step, camera)
                if name not in entry.meta["checksums"]:
                    raise CacheEntryError(episode, f"missing step {step} camera {camera!r}", path)
                tensor = entry.handle.get_tensor(name)  # type: ignore[attr-defined]
                check = verify if verify is not None else name not in entry.verified
                if check:
                    if checksum(tensor) != entry.meta["checksums"][name]:
                        raise CacheEntryError(episode, "corrupt (checksum mismatch)", path)
                    entry.verified.add(name)
                views.append(tensor)
            per_step.append(torch.stack(views, dim=1))  # [L, S, h, w, C]
        stacked = torch.stack(per_step, dim=0)  # [N, L, S, h, w, C]
        return list(stacked.unbind(dim=1))

    def read_batch(
        self, episodes: Sequence[str | int], steps: Sequence[int], *, verify: bool | None = None
    ) -> list[torch.Tensor]:
        """Features for a training batch of (episode, step) samples: one float16 tensor
        [B, S, h, w, C] per layer, what ``Teacher.features`` returns for those frames.
        Integer episode ids (a dataset's episode index) are used as their string form."""
        if len(episodes) != len(steps):
            raise RocketError(
                f"read_batch got {len(episodes)} episodes but {len(steps)} steps; pass one "
                "step per sample."
            )
        samples = [self.read(str(int(e)) if not isinstance(e, str) else e, [int(t)],
                             verify=verify) for e, t in zip(episodes, steps, strict=True)]
        return [torch.cat([s[i] for s in samples], dim=0) for i in range(len(self.spec.layers))]

    def writer(self, episode: str, steps: Sequence[int]) -> EntryWriter:
        """A streaming writer for one episode: feed it features batch by batch, then
        :meth:`EntryWriter.commit`. Memory stays bounded by one batch, which matters for
        VGGT-1B (about 56 MB per view and step for ten layers)."""
        return EntryWriter(self, episode, steps)

    def write(self, episode: str, features: Sequence[torch.Tensor], steps: Sequence[int]) -> Path:
        """Store a whole episode at once: ``features`` per layer [T, S, h, w, C]."""
        writer = self.writer(episode, steps)
        try:
            writer.add(features)
            return writer.commit()
        finally:
            writer.discard()

    def forget(self, path: Path) -> None:
        """Drop the open handle of ``path`` (its file was just replaced)."""
        with self._lock:
            self._open.pop(path, None)


def _manifest_code(root: Path) -> dict | None:
    """The code version recorded in a cache's manifest (None when it predates recording)."""
    try:
        return json.loads((root / "manifest.json").read_text()).get("code_version")
    except (OSError, ValueError, AttributeError):
        return None
