"""The teacher-feature cache: run the teacher once per dataset frame, read features later.

A frozen teacher gives the same features for the same frame every epoch, and VGGT-1B
costs seconds per frame pair on a CPU, so training reads them from disk instead. What
is stored is the *full frame's* patch grid (float16, the chosen layers): the student's
random crop is applied afterwards by crop-box resampling, so entries are keyed by the
source frame -- (dataset fingerprint, episode, step, camera) -- and by the teacher's
fingerprint, never by augmented pixels.

Layout of a cache directory::

    manifest.json                  the CacheSpec (teacher, layers, views, dataset, grid)
    episodes/<episode>.safetensors one file per episode; tensor "<step>/<camera>" is
                                   [L, h, w, C] float16; the header metadata holds the
                                   spec key, the episode id and a CRC32 per tensor

A file that is truncated, fails its checksum, or carries another spec key (stale) is
never used: reading raises a RocketError naming the fix, and filling recomputes it.
Writes go to a temporary file renamed into place, so an interrupted fill leaves either
the old entry or the new one, and a rerun resumes where it stopped.

The cache knows nothing about dataset classes: :func:`fill_cache` takes any iterable of
``(episode_id, frames)`` where ``frames`` maps camera name to ``[T, H, W, 3]`` uint8 (or
``[T, 3, H, W]`` float in [0, 1]) -- or a zero-argument callable returning that mapping,
so episodes already cached are never loaded.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from rocket_vla.errors import RocketError
from rocket_vla.fingerprint import check_same_code, code_changes, code_version
from rocket_vla.teachers.base import Teacher

CACHE_FORMAT = 1
STORE_DTYPE = torch.float16

Frames = Mapping[str, torch.Tensor]
FramesSource = Frames | Callable[[], Frames]


@dataclass(frozen=True)
class CacheSpec:
    """Everything the cached numbers depend on; its :meth:`key` tags every entry."""

    teacher: str  # Teacher.fingerprint(): architecture, weights, input size, precision
    layers: tuple[int, ...]  # resolved teacher layer indices, in output order
    cameras: tuple[str, ...]  # the views fed together to the teacher, in this order
    dataset: str  # fingerprint of the source frames
    grid: tuple[int, int]  # patch grid (rows, cols) of each view
    dim: int  # feature width
    dtype: str = "float16"
    format: int = CACHE_FORMAT

    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()

    def to_json(self) -> dict:
        return {**asdict(self), "key": self.key()}

    @classmethod
    def from_json(cls, data: Mapping) -> CacheSpec:
        return cls(
            teacher=str(data["teacher"]),
            layers=tuple(int(v) for v in data["layers"]),
            cameras=tuple(str(v) for v in data["cameras"]),
            dataset=str(data["dataset"]),
            grid=(int(data["grid"][0]), int(data["grid"][1])),
            dim=int(data["dim"]),
            dtype=str(data.get("dtype", "float16")),
            format=int(data.get("format", CACHE_FORMAT)),
        )


def spec_for(
    teacher: Teacher,
    layers: Sequence[int],
    cameras: Sequence[str],
    dataset: str,
    frame_size: tuple[int, int],
) -> CacheSpec:
    """The spec of caching ``layers`` of ``teacher`` for frames of ``frame_size`` (H, W)."""
    if not cameras:
        raise RocketError("no cameras were given for the teacher cache; name at least one view.")
    return CacheSpec(
        teacher=teacher.fingerprint(),
        layers=tuple(teacher.resolve_layers(layers)),
        cameras=tuple(cameras),
        dataset=dataset,
        grid=teacher.patch_grid(*frame_size),
        dim=teacher.dim,
    )


def fingerprint_files(paths: Iterable[str | Path]) -> str:
    """Content fingerprint of dataset files (names, sizes and bytes).

    Keying on content rather than paths or modification times means a copied dataset
    keeps its cache and an edited one invalidates it.
    """
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(Path(p) for p in paths):
        if not path.is_file():
            raise RocketError(f"dataset file {path} does not exist; check the dataset path.")
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def _checksum(tensor: torch.Tensor) -> str:
    data = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
    return f"{zlib.crc32(memoryview(data)) & 0xFFFFFFFF:08x}"


def _tensor_name(step: int, camera: str) -> str:
    return f"{int(step)}/{camera}"


def _safe_stem(episode: str) -> str:
    """A file name for an episode id: readable prefix plus a hash so ids never collide."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", episode)[:80].strip("._") or "episode"
    return f"{readable}-{hashlib.blake2b(episode.encode(), digest_size=6).hexdigest()}"


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
                    f"camera set or dataset ({_spec_diff(old, spec) if old else 'unknown'}); "
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
            _atomic_write_bytes(manifest, json.dumps(
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
                f"({_spec_diff(spec, expected)}); rerun `rocket cache-teacher` with the current "
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
        return self.root / "episodes" / f"{_safe_stem(episode)}.safetensors"

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
                    if _checksum(entry.handle.get_tensor(name)) != crc:  # type: ignore[attr-defined]
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
                    if _checksum(entry.handle.get_tensor(name)) != crc:  # type: ignore[attr-defined]
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
                name = _tensor_name(step, camera)
                if name not in entry.meta["checksums"]:
                    raise CacheEntryError(episode, f"missing step {step} camera {camera!r}", path)
                tensor = entry.handle.get_tensor(name)  # type: ignore[attr-defined]
                check = verify if verify is not None else name not in entry.verified
                if check:
                    if _checksum(tensor) != entry.meta["checksums"][name]:
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

    def _forget(self, path: Path) -> None:
        with self._lock:
            self._open.pop(path, None)


class EntryWriter:
    """Writes one episode file in the safetensors format, streaming, then renames it in.

    The header (tensor table and metadata) is written first with fixed-width checksum
    placeholders; tensors follow in step order as they are computed; the placeholders
    are then overwritten with the real CRC32s (same byte length, so offsets hold) and
    the temporary file is renamed over the entry. A crash leaves only a temp file.
    """

    def __init__(self, cache: FeatureCache, episode: str, steps: Sequence[int]) -> None:
        spec = cache.spec
        self.cache, self.episode = cache, episode
        self.steps = [int(v) for v in steps]
        if len(set(self.steps)) != len(self.steps):
            raise RocketError(f"episode {episode!r} lists a step twice; step indices must be unique.")
        self.shape = (len(spec.layers), *spec.grid, spec.dim)
        nbytes = 2 * math.prod(self.shape)
        self.names = [_tensor_name(t, c) for t in self.steps for c in spec.cameras]
        table: dict[str, object] = {}
        for i, name in enumerate(self.names):
            table[name] = {"dtype": "F16", "shape": list(self.shape),
                           "data_offsets": [i * nbytes, (i + 1) * nbytes]}
        self._table = table
        self._meta = {
            "spec": cache._key,
            "episode": episode,
            "steps": json.dumps(self.steps),
        }
        self.checksums = {name: "0" * 8 for name in self.names}
        self.path = cache.path(episode)
        self.tmp = self.path.with_name(
            f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        )
        self._handle = self.tmp.open("wb")
        self._header_len = len(self._header())
        self._next = 0
        try:
            self._handle.write(self._header())
        except BaseException:
            self.discard()
            raise

    def _header(self) -> bytes:
        meta = {**self._meta, "checksums": json.dumps(self.checksums, sort_keys=True)}
        body = json.dumps({"__metadata__": meta, **self._table}, separators=(",", ":")).encode()
        body += b" " * (-len(body) % 8)
        return len(body).to_bytes(8, "little") + body

    def add(self, features: Sequence[torch.Tensor]) -> None:
        """Append the next steps: ``features`` per layer [n, S, h, w, C]."""
        spec = self.cache.spec
        if len(features) != len(spec.layers):
            raise RocketError(
                f"expected features for {len(spec.layers)} layers, got {len(features)}."
            )
        stacked = torch.stack([f.detach().to("cpu", STORE_DTYPE) for f in features], dim=2)
        n = stacked.shape[0]
        expected = (n, len(spec.cameras), *self.shape)
        got = (stacked.shape[0], stacked.shape[1], *stacked.shape[2:])
        if got != expected or self._next + n * len(spec.cameras) > len(self.names):
            raise RocketError(
                f"features of shape {tuple(features[0].shape)} do not match the cache spec "
                f"(grid {spec.grid}, width {spec.dim}, {len(self.steps)} steps); the teacher "
                "or frame size changed -- start a new cache."
            )
        for i in range(n):
            for j in range(len(spec.cameras)):
                tensor = stacked[i, j].contiguous()  # [L, h, w, C]
                name = self.names[self._next]
                self.checksums[name] = _checksum(tensor)
                self._handle.write(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
                self._next += 1

    def commit(self) -> Path:
        """Finish the file and move it over the entry atomically."""
        if self._next != len(self.names):
            raise RocketError(
                f"episode {self.episode!r} got features for {self._next} of {len(self.names)} "
                "frames; feed every step before committing."
            )
        header = self._header()
        assert len(header) == self._header_len  # fixed-width checksums keep the offsets
        self._handle.seek(0)
        self._handle.write(header)
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self.tmp, self.path)
        self.cache._forget(self.path)
        return self.path

    def discard(self) -> None:
        """Drop an unfinished file (no-op after commit).

        On a full disk closing fails too (the buffered bytes cannot be flushed); the handle
        is closed all the same and the temp file must still go."""
        try:
            if not self._handle.closed:
                self._handle.close()
        except OSError:
            pass
        finally:
            self.tmp.unlink(missing_ok=True)


def _spec_diff(a: CacheSpec, b: CacheSpec) -> str:
    diffs = [f"{k}: {v!r} vs {getattr(b, k)!r}" for k, v in asdict(a).items() if v != getattr(b, k)]
    return "; ".join(diffs) or "format"


def _manifest_code(root: Path) -> dict | None:
    """The code version recorded in a cache's manifest (None when it predates recording)."""
    try:
        return json.loads((root / "manifest.json").read_text()).get("code_version")
    except (OSError, ValueError, AttributeError):
        return None


_TEMP_PID = re.compile(r"^\..+\.(\d+)\.\d+\.tmp$")


def remove_dead_temp_files(root: str | Path) -> list[Path]:
    """Delete temporary files left by fills that were killed; returns what was removed.

    Temp names carry the writer's pid (``.<name>.<pid>.<thread>.tmp``); a file whose
    process no longer exists can never be committed. Files of live processes (another
    shard filling the same directory) are left alone.
    """
    removed = []
    root = Path(root)
    for folder in (root, root / "episodes"):
        for path in folder.glob(".*.tmp"):
            match = _TEMP_PID.match(path.name)
            if match is None or _pid_alive(int(match.group(1))):
                continue
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:
                pass
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write through a temp file renamed into place; a failed write (a full disk) removes
    its partial temp file instead of leaving it to the next fill."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


#: errno values of a full disk or an exhausted quota.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


@contextmanager
def disk_full_is_one_sentence(root: Path) -> Iterator[None]:
    """Report a full disk while writing the cache at ``root`` as a RocketError naming it.

    Entries are renamed into place only when complete, so whatever was finished before the
    disk filled up stays valid and a rerun continues from it."""
    try:
        yield
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        raise RocketError(
            f"the disk holding the teacher cache {root} is full; free space on it (finished "
            "episodes are kept) and rerun `rocket cache-teacher` to continue, or pass another "
            "--out_dir."
        ) from err


# ------------------------------------------------------------------------------- filling
@dataclass
class FillReport:
    """What a fill did; ``repaired`` lists entries found damaged or stale and recomputed."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    repaired: dict[str, str] = field(default_factory=dict)
    frames: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        return (
            f"wrote {len(self.written)} episodes ({self.frames} steps, {rate:.2f} steps/s), "
            f"skipped {len(self.skipped)} already cached, recomputed {len(self.repaired)} "
            "damaged or stale"
        )


def frames_to_views(frames: Frames, cameras: Sequence[str]) -> torch.Tensor:
    """Stack per-camera frames into the teacher layout [T, S, 3, H, W] float in [0, 1]."""
    views = []
    for camera in cameras:
        if camera not in frames:
            raise RocketError(
                f"episode has no camera {camera!r} (has {sorted(frames)}); pick cameras that "
                "every episode records."
            )
        x = torch.as_tensor(frames[camera])
        if x.ndim != 4:
            raise RocketError(
                f"camera {camera!r} frames must be [T, H, W, 3] or [T, 3, H, W], got "
                f"{tuple(x.shape)}."
            )
        if x.shape[-1] == 3 and x.shape[1] != 3:
            x = x.permute(0, 3, 1, 2)
        if x.shape[0] == 0:
            raise RocketError(f"camera {camera!r} has no frames; drop empty episodes first.")
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        views.append(x)
    if len({tuple(v.shape) for v in views}) != 1:
        raise RocketError(
            f"cameras {list(cameras)} have different frame shapes "
            f"{[tuple(v.shape) for v in views]}; resize them to one size first."
        )
    return torch.stack(views, dim=1)


def in_shard(episode: str, shard: tuple[int, int]) -> bool:
    """Stable assignment of episodes to ``shard = (index, count)`` (for parallel fills)."""
    index, count = shard
    digest = hashlib.blake2b(episode.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count == index


def fill_cache(
    cache: FeatureCache,
    teacher: Teacher,
    items: Iterable[tuple[str, FramesSource] | tuple[str, FramesSource, Sequence[int]]],
    *,
    batch_size: int = 8,
    shard: tuple[int, int] = (0, 1),
    verify_existing: bool = False,
    progress: bool = True,
    total: int | None = None,
) -> FillReport:
    """Compute and store features for every episode not yet (validly) cached.

    Each item is ``(episode_id, frames)`` or ``(episode_id, frames, steps)``; ``steps``
    are the step indices of the stored frames (episodes that keep images only once per
    action chunk), ``0..T-1`` by default.

    Resumable: episodes with a valid entry are skipped without loading their frames.
    Damaged or stale entries are recomputed and listed in the report. ``shard`` splits
    the episodes between processes (one per GPU, say) by a stable hash of their id;
    One background thread checksums and writes each batch while the teacher computes
    the next (a single thread, because a file is written in step order).
    """
    index, count = shard
    if not (count >= 1 and 0 <= index < count):
        raise RocketError(f"shard {index}/{count} is invalid; use an index in 0..count-1.")
    if batch_size < 1:
        raise RocketError(f"batch size {batch_size} must be at least 1.")
    report = FillReport()
    bar = _progress(total, progress)
    start = time.perf_counter()
    try:
        with disk_full_is_one_sentence(cache.root), ThreadPoolExecutor(max_workers=1) as pool:
            for item in items:
                episode, source, *rest = item
                if not in_shard(episode, shard):
                    continue
                status = cache.check(episode, verify=verify_existing)
                if status == "ok":
                    report.skipped.append(episode)
                    bar.update(1)
                    continue
                if status != "missing":
                    report.repaired[episode] = status
                frames = source() if callable(source) else source
                views = frames_to_views(frames, cache.spec.cameras)
                steps = [int(v) for v in rest[0]] if rest else list(range(views.shape[0]))
                if len(steps) != views.shape[0]:
                    raise RocketError(
                        f"episode {episode!r} has {views.shape[0]} frames but {len(steps)} step "
                        "indices; give one step index per stored frame."
                    )
                _write_episode(cache, teacher, pool, episode, views, steps, batch_size)
                report.written.append(episode)
                report.frames += len(steps)
                bar.update(1)
                bar.set_postfix(steps=report.frames)
    finally:
        bar.close()  # before any error message, which would else share the bar's line
    report.seconds = time.perf_counter() - start
    return report


def _write_episode(cache: FeatureCache, teacher: Teacher, pool: ThreadPoolExecutor, episode: str,
                   views: torch.Tensor, steps: list[int], batch_size: int) -> None:
    """Run the teacher over one episode's views and commit its entry; the pool's thread
    checksums and writes each batch while the teacher computes the next. On any error the
    writes in flight finish first, then the temp file is removed."""
    writer = cache.writer(episode, steps)
    pending: list[Future] = []
    try:
        for lo in range(0, views.shape[0], batch_size):
            feats = teacher.features(views[lo:lo + batch_size], cache.spec.layers)
            feats = [f.to("cpu", STORE_DTYPE) for f in feats]
            pending.append(pool.submit(writer.add, feats))
            _drain(pending, limit=2)
        _drain(pending, limit=0)
        writer.commit()
    finally:
        _settle(pending)
        writer.discard()


def _drain(pending: list[Future], limit: int) -> list[Future]:
    """Wait until at most ``limit`` writes are in flight (bounds memory); re-raise errors."""
    while len(pending) > limit:
        pending.pop(0).result()
    return pending


def _settle(pending: list[Future]) -> None:
    """Wait for every write in flight without raising: on the way out of a failed episode
    the first error is already propagating, and the temp file may be removed only once no
    write to it is running."""
    wait(pending)
    pending.clear()


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kwargs: object) -> None: ...
    def close(self) -> None: ...


def _progress(total: int | None, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress is a nicety; the fill itself needs no extra
        return _NoBar()
    return tqdm(total=total, unit="episode", desc="teacher cache")
