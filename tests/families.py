"""Small random-weight models of the 2025-2026 families, built in the test run (no hub here).

Each is made from the family's real configuration class in transformers (``Qwen3Config``,
``Gemma3TextConfig``) with a hidden size of 64 and 2 layers, and saved as a
sentence-transformers directory with the family's real prompts and module layout:

- Qwen3-Embedding: Transformer -> Pooling (last token) -> Normalize; prompts ``query`` (the
  instruction) and ``document`` (empty); the tokenizer appends the end-of-text token, which the
  last-token pooling reads.
- EmbeddingGemma: Transformer (bidirectional attention) -> Pooling (mean) -> Dense -> Dense ->
  Normalize; prompts ``query`` and ``document`` (``task: search result | query: `` and
  ``title: none | text: ``).

The one thing that is not the family's own is the tokenizer: a SentencePiece vocabulary of 1,000
pieces trained here on Python's language reference (the real ones are 150k-260k pieces and not
on this machine), saved as a Llama/Gemma tokenizer that both transformers and llama.cpp read.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from lokal.profiles.embedding import GEMMA_DOCUMENT, GEMMA_QUERY, QWEN3_QUERY

from .conftest import paragraphs

HIDDEN = 64
#: Context the tests' models are cut to (their position tables are the families' own).
MAX_TOKENS = 512


def train_vocab(out: Path, *, pad_id: int = 3, symbols: tuple[str, ...] = ()) -> Path:
    """A SentencePiece model (unk 0, bos 1, eos 2, pad 3) trained on real prose; ``symbols``
    become pieces of their own."""
    import sentencepiece as spm

    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus.txt"
    corpus.write_text("\n".join(paragraphs()), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(out / "tokenizer"),
        vocab_size=1000,
        model_type="unigram",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=pad_id,
        byte_fallback=True,  # llama.cpp's SentencePiece tokenizer needs the <0x..> pieces
        user_defined_symbols=list(symbols),
        minloglevel=2,
    )
    corpus.unlink()
    return out / "tokenizer.model"


def _tokenizer(cls: Any, vocab: Path, out: Path, *, bos: bool) -> Any:
    """A transformers tokenizer over ``vocab`` (the trained pieces' own special tokens; Gemma's
    adds a ``<mask>``), saved with its ``tokenizer.model`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(vocab.read_bytes())
    config = {
        "add_bos_token": bos,
        "add_eos_token": True,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "legacy": False,
        "model_max_length": MAX_TOKENS,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = cls.from_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return tokenizer


def _save_st(
    out: Path,
    transformer_dir: Path,
    modules: list[object],
    prompts: dict[str, str],
    *,
    tokenizer_file: str = "tokenizer.model",
) -> Path:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Transformer

    first = Transformer(str(transformer_dir), max_seq_length=MAX_TOKENS)
    model = SentenceTransformer(modules=[first, *modules], prompts=prompts, device="cpu")
    model.save(str(out))
    # the SentencePiece file itself: transformers saved only tokenizer.json; llama.cpp's
    # converter reads tokenizer.model (sentencepiece.bpe.model for XLM-R)
    (out / tokenizer_file).write_bytes((transformer_dir / tokenizer_file).read_bytes())
    return out


def build_qwen3_embedding(out: Path, work: Path) -> Path:
    """A tiny Qwen3-Embedding as a sentence-transformers directory at ``out``."""
    import torch
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling
    from transformers import LlamaTokenizer, Qwen3Config, Qwen3Model

    raw = work / "qwen3-raw"
    # as Qwen3-Embedding's tokenizer: no start token, the end-of-text token appended
    tokenizer = _tokenizer(LlamaTokenizer, train_vocab(work / "qwen3-vocab"), raw, bos=False)
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        initializer_range=0.2,
    )
    Qwen3Model(config).save_pretrained(str(raw))
    modules = [Pooling(HIDDEN, pooling_mode="lasttoken"), Normalize()]
    return _save_st(out, raw, modules, {"query": QWEN3_QUERY, "document": ""})


def build_embeddinggemma(out: Path, work: Path) -> Path:
    """A tiny EmbeddingGemma as a sentence-transformers directory at ``out``."""
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling
    from transformers import Gemma3TextConfig, Gemma3TextModel, GemmaTokenizer

    raw = work / "gemma-raw"
    tokenizer = _tokenizer(GemmaTokenizer, train_vocab(work / "gemma-vocab"), raw, bos=True)
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=128,
        # six layers: Gemma 3's pattern of five sliding-window layers and one global one,
        # which llama.cpp assumes for gemma-embedding (its GGUF records no pattern)
        num_hidden_layers=6,
        # heads of 32: with 16-wide key/value rows llama.cpp's q8_0 kernels die with SIGILL
        # on this AVX-512/AMX CPU (a tiny-shape problem; real models have 256)
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        query_pre_attn_scalar=32,
        max_position_embeddings=2048,
        sliding_window=512,
        layer_types=["sliding_attention"] * 5 + ["full_attention"],
        use_bidirectional_attention=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        initializer_range=0.2,
    )
    Gemma3TextModel(config).save_pretrained(str(raw))
    # the converter reads the original sliding window from config.json
    cfg = json.loads((raw / "config.json").read_text())
    cfg["sliding_window"] = 512
    (raw / "config.json").write_text(json.dumps(cfg, indent=2))
    modules = [
        Pooling(HIDDEN, pooling_mode="mean"),
        Dense(HIDDEN, 2 * HIDDEN, bias=False, activation_function=torch.nn.Identity()),
        Dense(2 * HIDDEN, HIDDEN, bias=False, activation_function=torch.nn.Identity()),
        Normalize(),
    ]
    return _save_st(out, raw, modules, {"query": GEMMA_QUERY, "document": GEMMA_DOCUMENT})


#: The chat markers and answers of Qwen3-Reranker's prompt, one piece each as in Qwen's vocabulary.
RERANKER_SYMBOLS = ("<|im_start|>", "<|im_end|>", "<think>", "</think>", "yes", "no")


def build_qwen3_reranker(out: Path, work: Path) -> Path:
    """A tiny Qwen3-Reranker: a ``Qwen3ForCausalLM`` (tied embeddings, as the 0.6B) whose
    vocabulary has the prompt's markers and the "yes" / "no" answers as tokens."""
    import torch
    from transformers import LlamaTokenizer, Qwen3Config, Qwen3ForCausalLM

    vocab = train_vocab(work / "reranker-vocab", symbols=RERANKER_SYMBOLS)
    tokenizer = _tokenizer(LlamaTokenizer, vocab, out, bos=False)
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=MAX_TOKENS,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        initializer_range=0.2,
    )
    Qwen3ForCausalLM(config).save_pretrained(str(out))
    return out


# ---- XLM-RoBERTa (granite-embedding-*-multilingual) ---------------------------------------------

MULTILINGUAL = Path(__file__).parent / "data" / "multilingual.txt"


def multilingual_sentences() -> list[str]:
    """Real sentences in 14 languages and scripts (tests/data/multilingual.txt): the Universal
    Declaration of Human Rights' first article, then everyday and technical sentences, and
    text a normalizer rewrites (full-width letters, a ligature, a combining accent, runs of
    spaces)."""
    return MULTILINGUAL.read_text(encoding="utf-8").splitlines()


def train_xlmr_vocab(out: Path) -> Path:
    """A SentencePiece unigram model laid out as XLM-R's ``sentencepiece.bpe.model``: unk 0,
    bos 1, eos 2, no pad (the tokenizer shifts every piece by one, fairseq's layout), no byte
    fallback, every character of the training text kept. Trained on Python's language
    reference and the first 14 multilingual sentences (the rest are held out: their unseen
    characters become ``<unk>``)."""
    import sentencepiece as spm

    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus.txt"
    text = paragraphs() + multilingual_sentences()[:14] * 3
    corpus.write_text("\n".join(text), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(out / "sentencepiece.bpe"),
        vocab_size=1500,
        model_type="unigram",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        character_coverage=1.0,
        minloglevel=2,
    )
    corpus.unlink()
    return out / "sentencepiece.bpe.model"


def _save_roberta_like(
    config_cls: Any, model_cls: Any, raw: Path, out: Path, vocab_size: int, tokenizer_file: str
) -> Path:
    """A random 2-layer (XLM-)RoBERTa encoder in ``raw`` (positions offset past the pad token,
    as RoBERTa's are), saved with ``raw``'s tokenizer as a sentence-transformers directory:
    Transformer -> Pooling (CLS) -> Normalize, no prompts (granite-embedding's layout)."""
    import torch
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    torch.manual_seed(0)
    config = config_cls(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=MAX_TOKENS + 2,
        type_vocab_size=1,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        initializer_range=0.2,
    )
    model_cls(config, add_pooling_layer=False).save_pretrained(str(raw))
    modules = [Pooling(HIDDEN, pooling_mode="cls"), Normalize()]
    return _save_st(out, raw, modules, {}, tokenizer_file=tokenizer_file)


def build_granite_multilingual(out: Path, work: Path) -> Path:
    """A tiny granite-embedding-278m-multilingual: an ``XLMRobertaModel`` (2 layers, hidden 64,
    positions offset past the pad token as XLM-R's are) with an XLM-R tokenizer, saved as a
    sentence-transformers directory: Transformer -> Pooling (CLS) -> Normalize, no prompts."""
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizer

    raw = work / "xlmr-raw"
    raw.mkdir(parents=True, exist_ok=True)
    vocab = train_xlmr_vocab(work / "xlmr-vocab")
    (raw / vocab.name).write_bytes(vocab.read_bytes())
    tokenizer = XLMRobertaTokenizer.from_pretrained(str(raw), model_max_length=MAX_TOKENS)
    tokenizer.save_pretrained(str(raw))
    return _save_roberta_like(
        XLMRobertaConfig, XLMRobertaModel, raw, out, len(tokenizer), vocab.name
    )


# ---- RoBERTa (granite-embedding-125m-english) ----------------------------------------------------


def build_granite_english(out: Path, work: Path) -> Path:
    """A tiny granite-embedding-125m-english: a ``RobertaModel`` with a byte-level BPE
    vocabulary of 1,500 trained here with the ``tokenizers`` library on Python's language
    reference (RoBERTa's layout: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3, ``<mask>``),
    saved as Transformer -> Pooling (CLS) -> Normalize."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    raw = work / "roberta-raw"
    raw.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        paragraphs(),
        vocab_size=1500,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    bpe.save_model(str(raw))  # vocab.json, merges.txt
    tokenizer = RobertaTokenizer.from_pretrained(str(raw), model_max_length=MAX_TOKENS)
    tokenizer.save_pretrained(str(raw))
    return _save_roberta_like(RobertaConfig, RobertaModel, raw, out, len(tokenizer), "vocab.json")


# ---- ModernBERT (granite-embedding-english-r2, small-english-r2) --------------------------------


def build_granite_r2(out: Path, work: Path) -> Path:
    """A tiny granite-embedding-small-english-r2: a ``ModernBertModel`` (3 layers, hidden 64,
    one global attention layer then two with a sliding window of 32 tokens, so the tests'
    paragraphs cross windows; RoPE 160k global / 10k local, as ModernBERT's) with a byte-level
    BPE of 1,500 trained here (``[CLS] text [SEP]``, ModernBERT's special tokens), saved as
    Transformer -> Pooling (CLS) -> Normalize, no prompts."""
    import torch
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import ModernBertConfig, ModernBertModel, PreTrainedTokenizerFast

    raw = work / "modernbert-raw"
    raw.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    bpe.train_from_iterator(
        paragraphs(), vocab_size=1500, special_tokens=specials, show_progress=False
    )
    bpe.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", 1), ("[SEP]", 2)],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        **{f"{t.strip('[]').lower()}_token": t for t in specials},
        model_max_length=MAX_TOKENS,
    )
    tokenizer.save_pretrained(str(raw))
    torch.manual_seed(0)
    config = ModernBertConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=2,
        max_position_embeddings=MAX_TOKENS,
        local_attention=32,
        global_attn_every_n_layers=3,
        pad_token_id=3,
        bos_token_id=1,
        eos_token_id=2,
        cls_token_id=1,
        sep_token_id=2,
        initializer_range=0.2,
    )
    ModernBertModel(config).save_pretrained(str(raw))
    modules = [Pooling(HIDDEN, pooling_mode="cls"), Normalize()]
    return _save_st(out, raw, modules, {}, tokenizer_file="tokenizer.json")


def eval_and_bench(model: str, texts: list[str], tmp_path: Path) -> None:
    """`lokal eval` (a BEIR set made of ``texts``: each text's first words find it) and `lokal
    bench` run on ``model`` through the CLI; a random model's numbers mean nothing for quality,
    the paths must run."""
    lokal = str(Path(sys.executable).parent / "lokal")
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    docs = texts[:12]
    corpus = [{"_id": f"d{i}", "title": "", "text": t} for i, t in enumerate(docs)]
    queries = [{"_id": f"q{i}", "text": " ".join(t.split()[:8])} for i, t in enumerate(docs)]
    (beir / "corpus.jsonl").write_text("\n".join(json.dumps(c) for c in corpus) + "\n")
    (beir / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(len(docs)))
    (beir / "qrels" / "test.tsv").write_text(qrels)

    def run(*args: str) -> dict[str, object] | list[dict[str, object]]:
        proc = subprocess.run([lokal, *args, "--json"], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)  # type: ignore[no-any-return]

    report = run("eval", str(beir), "--model", model)
    assert isinstance(report, dict)
    (result,) = report["results"]  # type: ignore[misc]
    assert result["identity"]["backend"] == "gguf"
    assert 0 <= result["metrics"]["ndcg@10"] <= 1
    rows = run("bench", model, "--texts", "8")
    assert isinstance(rows, list)
    assert rows[0]["texts"] == 8 and rows[0]["tokens_per_s"] > 0
