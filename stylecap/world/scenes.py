"""Scenes of the shapes world: what an image holds, exactly, and the relations that are true in it.

A scene is the single source of truth: the renderer draws it, the language writers describe it, and
the metrics score generated text against it. Objects sit in distinct cells of a 3×3 grid with a
small jitter, so "left of" means "in a column further left" and is always visibly so.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from stylecap.errors import InputError

GRID = 3
OBJECT_COUNT_WEIGHTS = {1: 0.15, 2: 0.35, 3: 0.5}  # keep most scenes at 3 objects (see module doc)
JITTER = 0.08  # of a grid cell; with the radii in vocab.json adjacent objects keep a clear gap


@lru_cache(maxsize=1)
def vocab() -> dict:
    """The world's vocabulary (vocab.json), shared by every writer and by the parser."""
    return json.loads(resources.files("stylecap.world").joinpath("vocab.json").read_text())


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    col: int  # grid column, 0 = left
    row: int  # grid row, 0 = top
    dx: float = 0.0  # jitter inside the cell, in cells
    dy: float = 0.0
    angle: float = 0.0  # rotation in degrees (small, so a square stays a square)
    tint: tuple[int, int, int] = (0, 0, 0)  # per-object colour jitter no caption mentions

    @property
    def key(self) -> tuple[str, str, str]:
        """What a caption can say about the object: (size, colour, shape)."""
        return (self.size, self.colour, self.shape)


@dataclass(frozen=True)
class Scene:
    image_id: int
    split: str
    background: str
    objects: tuple[Obj, ...]
    texture_seed: int = 0  # seeds the lighting gradient and texture of the rendering
    tint: tuple[int, int, int] = field(default=(0, 0, 0))

    def to_json(self) -> str:
        # vars() rather than dataclasses.asdict: the same fields in the same order, without asdict's
        # recursive deep copy, which was a tenth of a world build
        return json.dumps({**vars(self), "objects": [vars(o) for o in self.objects]}, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        objects = tuple(Obj(**{**o, "tint": tuple(o["tint"])}) for o in d["objects"])
        return cls(**{**d, "objects": objects, "tint": tuple(d["tint"])})


def relation_holds(a: Obj, rel: str, b: Obj) -> bool:
    """Is ``a`` <rel> ``b``? The one definition of the relations, used by writers and metrics."""
    if rel == "left":
        return a.col < b.col
    if rel == "right":
        return a.col > b.col
    if rel == "above":
        return a.row < b.row
    if rel == "below":
        return a.row > b.row
    raise ValueError(f"unknown relation {rel!r}")


def relations_between(a: Obj, b: Obj) -> list[str]:
    """Every relation that holds from ``a`` to ``b`` (one or two: objects never share a cell)."""
    return [r for r in vocab()["relations"] if relation_holds(a, r, b)]


STREAMS = ("scene", "language")


def stream(seed: int, image_id: int, name: str) -> random.Random:
    """The random stream ``name`` of one image: independent of every other image and stream, so
    any process can make any image, and adding a writer never changes the pictures."""
    return random.Random((seed << 40) + (image_id << 4) + STREAMS.index(name))


def sample_scene(rng: random.Random, image_id: int, split: str) -> Scene:
    """A random scene: 1–3 objects with distinct shapes, colours and cells.

    Distinct shapes and colours make every short reference ("the circle", "the red object")
    unambiguous, which keeps captions, questions and relation scoring exact.
    """
    v = vocab()
    n = rng.choices(list(OBJECT_COUNT_WEIGHTS), weights=list(OBJECT_COUNT_WEIGHTS.values()))[0]
    shapes = rng.sample(list(v["shapes"]), n)
    colours = rng.sample(list(v["colours"]), n)
    cells = rng.sample(range(GRID * GRID), n)
    objects = tuple(
        Obj(shape=s, colour=c, size=rng.choice(list(v["sizes"])), col=cell % GRID, row=cell // GRID,
            dx=_jitter(rng, JITTER), dy=_jitter(rng, JITTER), angle=_jitter(rng, 12.0), tint=_tint(rng, 24))
        for s, c, cell in zip(shapes, colours, cells, strict=True))
    return Scene(image_id=image_id, split=split, background=rng.choice(list(v["backgrounds"])),
                 objects=objects, texture_seed=rng.getrandbits(31), tint=_tint(rng, 8))


def _tint(rng: random.Random, spread: int) -> tuple[int, int, int]:
    return tuple(rng.randint(-spread, spread) for _ in range(3))


def _jitter(rng: random.Random, spread: float) -> float:
    return round(rng.uniform(-spread, spread), 4)  # short, exact JSON that re-renders identically


def save_scenes(scenes: list[Scene], path: Path) -> None:
    path.write_text("".join(s.to_json() + "\n" for s in scenes))


def load_scenes(world: str | Path) -> dict[int, Scene]:
    """The scenes of a built world (its folder or its scenes.jsonl), by image id."""
    path = Path(world)
    if path.is_dir():
        path = path / "scenes.jsonl"
    if not path.is_file():
        raise InputError("no scenes.jsonl found", str(path), "build a world with `stylecap world build`")
    scenes = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            scene = Scene.from_dict(json.loads(line))
        except (ValueError, TypeError, KeyError) as exc:
            raise InputError(f"malformed scene: {exc}", f"{path}:{n}", "rebuild the world") from None
        scenes[scene.image_id] = scene
    return scenes
