"""The 2026 embedding families at their published shapes, random weights, for `lokal bench`.

The tests' family models (tests/families.py) are hidden-64, 2-6-layer toys: their speed means
nothing. This script builds the same families (same transformers classes, prompts, pooling,
sentence-transformers layout and offline-trained tokenizers, through tests/families.py's own
helpers) with the dimensions of the published ``config.json`` files, as recalled from the
model cards and transformers' configuration classes (no hub on this machine to read them):

- ``embeddinggemma``: EmbeddingGemma-300m, ``Gemma3TextModel``, hidden 768, 24 layers (five
  sliding-window layers of 512 then one global, four times), 3 heads / 1 key-value head of
  256, MLP 1152, vocabulary 262,144, bidirectional attention; mean pooling, Dense 768 -> 3072
  -> 768, Normalize.
- ``qwen3``: Qwen3-Embedding-0.6B, ``Qwen3Model``, hidden 1024, 28 layers, 16 heads / 8
  key-value heads of 128, MLP 3072, vocabulary 151,669, tied embeddings; last-token pooling.
- ``granite-r2-small``: granite-embedding-small-english-r2, ``ModernBertModel``, hidden 384,
  12 layers, 6 heads, MLP 1536, vocabulary 50,368, a global attention layer every third, local
  window 128, RoPE 80k global / 10k local; CLS pooling.
- ``granite-multilingual``: granite-embedding-278m-multilingual, ``XLMRobertaModel`` (XLM-R
  base), hidden 768, 12 layers, 12 heads, MLP 3072, vocabulary 250,002; CLS pooling.

Speed depends on the shapes, not on the weights, so random weights are fine. The tokenizer is
the tests' small trained vocabulary (1,000-1,500 pieces) but the embedding table keeps the
real vocabulary size (its weight is part of load time and memory); the tokens past the trained
ones are never produced. Texts therefore split into somewhat more tokens than with the real
tokenizer: compare tokens/s, not texts/s, across families.

    .venv/bin/python benchmarks/family_shapes.py build NAME OUT
    .venv/bin/python benchmarks/family_shapes.py list

Then ``lokal models pack OUT -q q8_0`` (the GGUF goes into the model cache as ``NAME`` of
``OUT``'s last part), ``lokal bench all-MiniLM-L6-v2 NAME -b gguf -q q8_0 --texts 100`` and
``lokal bench all-MiniLM-L6-v2 OUT -b sentence-transformers --texts 100``
(docs/choosing-a-model.md, "Speed at the real shapes").
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import families  # the tests' tokenizers and layout helpers


def build_embeddinggemma(out: Path, work: Path) -> Path:
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling
    from transformers import Gemma3TextConfig, Gemma3TextModel, GemmaTokenizer

    from lokal.profiles.embedding import GEMMA_DOCUMENT, GEMMA_QUERY

    raw = work / "gemma-raw"
    vocab = families.train_vocab(work / "gemma-vocab")
    families._tokenizer(GemmaTokenizer, vocab, raw, bos=True)
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=262144,
        hidden_size=768,
        intermediate_size=1152,
        num_hidden_layers=24,
        num_attention_heads=3,
        num_key_value_heads=1,
        head_dim=256,
        query_pre_attn_scalar=256,
        max_position_embeddings=2048,
        sliding_window=512,
        layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 4,
        use_bidirectional_attention=True,
        rope_theta=1_000_000.0,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    Gemma3TextModel(config).save_pretrained(str(raw))
    cfg = json.loads((raw / "config.json").read_text())
    cfg["sliding_window"] = 512  # the converter reads the original window
    (raw / "config.json").write_text(json.dumps(cfg, indent=2))
    identity = torch.nn.Identity()
    modules = [
        Pooling(768, pooling_mode="mean"),
        Dense(768, 3072, bias=False, activation_function=identity),
        Dense(3072, 768, bias=False, activation_function=identity),
        Normalize(),
    ]
    prompts = {"query": GEMMA_QUERY, "document": GEMMA_DOCUMENT}
    return families._save_st(out, raw, modules, prompts)


def _with_config(
    build: Callable[[Path, Path], Path], config: str, **dims: object
) -> Callable[..., Path]:
    """Run one of tests/families.py's builders with its config class (``config``, a name in
    ``transformers``) given the real dimensions (``dims`` override what the builder passes) and
    the module's hidden size.

    The constructor is replaced on the class itself: transformers' lazy module sets its names
    again when a model class is first loaded, so a class put in their place does not stay."""

    def run(out: Path, work: Path) -> Path:
        import transformers

        cls = getattr(transformers, config)
        init, hidden = cls.__init__, families.HIDDEN
        try:
            cls.__init__ = _override(init, dims)
            families.HIDDEN = int(dims["hidden_size"])  # type: ignore[call-overload]
            return build(out, work)
        finally:
            cls.__init__ = init
            families.HIDDEN = hidden

    return run


def _override(init: Callable[..., None], dims: dict[str, object]) -> Callable[..., None]:
    """``init`` with ``dims`` taken over the keyword arguments it is given."""

    def make(self: object, *args: object, **kwargs: object) -> None:
        init(self, *args, **{**kwargs, **dims})

    return make


BUILDERS: dict[str, Callable[[Path, Path], Path]] = {
    "embeddinggemma": build_embeddinggemma,
    "qwen3": _with_config(
        families.build_qwen3_embedding,
        "Qwen3Config",
        vocab_size=151669,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        initializer_range=0.02,
    ),
    "granite-r2-small": _with_config(
        families.build_granite_r2,
        "ModernBertConfig",
        vocab_size=50368,
        hidden_size=384,
        intermediate_size=1536,
        num_hidden_layers=12,
        num_attention_heads=6,
        max_position_embeddings=8192,
        local_attention=128,
        global_attn_every_n_layers=3,
        rope_parameters={
            "full_attention": {"rope_theta": 80_000.0, "rope_type": "default"},
            "sliding_attention": {"rope_theta": 10_000.0, "rope_type": "default"},
        },
        initializer_range=0.02,
    ),
    "granite-multilingual": _with_config(
        families.build_granite_multilingual,
        "XLMRobertaConfig",
        vocab_size=250002,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=514,
        initializer_range=0.02,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list")
    build = sub.add_parser("build")
    build.add_argument("name", choices=sorted(BUILDERS))
    build.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.cmd == "list":
        print("\n".join(sorted(BUILDERS)))
        return
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        BUILDERS[args.name](args.out, Path(work))
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    took = time.perf_counter() - start
    print(f"{args.name}: {args.out} ({size / 1e6:.0f} MB) in {took:.0f} s")


if __name__ == "__main__":
    main()
