"""The synthetic shapes world: scenes known exactly, rendered as small images and described in the
public dataset formats, plus metrics that score generated text against the scenes.

Needs no torch: PIL, numpy and json only.
"""
from stylecap.world.build import SIZES, SPLITS, build_world
from stylecap.world.metrics import is_in_voice, parse_caption, score_captions
from stylecap.world.scenes import Obj, Scene, load_scenes, relation_holds, vocab

__all__ = ["SIZES", "SPLITS", "Obj", "Scene", "build_world", "is_in_voice", "load_scenes",
           "parse_caption", "relation_holds", "score_captions", "vocab"]
