"""Style corpora: sentences in a style from LLM prompts, books, web pages and reviews, written to a
resumable corpus folder. Imports nothing heavy (no torch); sources load their libraries on use."""
from stylecap.generate.llm import LLMSettings
from stylecap.generate.run import GenerateConfig, generate
from stylecap.generate.sources import SourceOptions
from stylecap.generate.store import iter_corpus_records, read_corpus_texts
from stylecap.generate.styles import load_style, style_names
from stylecap.generate.web import WebSettings

__all__ = ["GenerateConfig", "LLMSettings", "SourceOptions", "WebSettings", "generate",
           "iter_corpus_records", "load_style", "read_corpus_texts", "style_names"]
