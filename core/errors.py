"""lokal's exceptions.

Every error lokal raises on purpose derives from :class:`LokalError`, so callers can catch one
type. The hierarchy is small and flat::

    LokalError
    ├── MissingDependency      an optional extra is not installed (names the pip command)
    ├── ModelNotFound          a model name, path or hub id could not be resolved on this machine
    ├── ModelLoadError         the weights exist but cannot be loaded (malformed GGUF, bad config)
    ├── ProfileError           an invalid profile override or ``dimensions`` request
    │   └── UnknownPrefix      an unknown model's card or config asks for a query prefix
    │                          lokal cannot map (``embed_query`` refuses until one is set)
    ├── TextTooLong            ``truncation="error"`` and a text exceeds the model's context
    ├── ModelMismatch          vectors from two different models would be mixed
    ├── IntegrityError         a manifest or checksum does not match the file
    ├── EvalDataError          an evaluation set is missing, empty or malformed (names file, line)
    ├── IndexFileError         base of the index errors (``lokal.index``):
    │   ├── IndexReadOnly      a write to an index this process may only read
    │   ├── FilterError        a metadata filter that is malformed or unsafe
    │   ├── MemoryBudgetError  a search copy memory budget that is not a size (256M, 1G)
    │   └── SQLiteUnavailable  no SQLite library here can load sqlite-vec (names what to install)
    ├── CentralError           the central PostgreSQL store refused or failed (``lokal.central``):
    │   ├── CentralUnreachable cannot connect, or the connection was lost (retry later)
    │   └── BundleError        a sync bundle is damaged or skips what the centre has not applied

Warnings: ``TruncationWarning`` (lokal.embedder) and ``ModelVariantWarning`` (an index read
with another variant of the same model: comparable vectors, slightly different values).

Errors raised by lokal keep the original exception as ``__cause__`` (``raise ... from exc``);
nothing is flattened into a string. The CLI turns them into messages at its boundary only.
"""

from __future__ import annotations


class LokalError(Exception):
    """Base class of every error lokal raises on purpose."""


class MissingDependency(LokalError, ImportError):
    """An optional extra is needed for this feature; the message names the install command.

    ``extra`` is one of lokal's extras (``pip install 'lokal[EXTRA]'``); for a package lokal
    itself depends on, ``extra`` is None and ``package`` names the requirement to reinstall.
    """

    def __init__(
        self, *, extra: str | None = None, feature: str, package: str | None = None
    ) -> None:
        self.extra = extra
        if extra is not None:
            text = f"{feature} needs the '{extra}' extra: pip install 'lokal[{extra}]'"
        else:
            text = (
                f"{feature} needs {package}, which lokal itself depends on; this installation "
                f"lacks it: pip install '{package}' (or reinstall lokal)"
            )
        super().__init__(text)


class ModelNotFound(LokalError, FileNotFoundError):
    """A model could not be found on this machine (and was not, or could not be, downloaded)."""


class ModelLoadError(LokalError):
    """The model's files exist but could not be loaded."""


class ProfileError(LokalError, ValueError):
    """A profile field or an embedding option is invalid for this model."""


class UnknownPrefix(ProfileError):
    """An unknown model (no family matched by any evidence) whose model card or
    sentence-transformers config asks for a query instruction or prefix that lokal cannot map.
    Queries embedded without it would quietly retrieve worse, so :meth:`lokal.Embedder.embed_query`
    refuses until the caller sets ``query_prefix`` (``""`` for none) or passes
    ``allow_unknown_prefixes=True``. ``asked`` holds what the files ask for."""

    def __init__(self, model: str, asked: tuple[str, ...], where: str) -> None:
        self.model = model
        self.asked = asked
        shown = ", ".join(repr(a) for a in asked[:3])
        first = repr(asked[0]) if asked else "'...'"
        super().__init__(
            f"{model} is not a model lokal knows, and its {where} asks for a query "
            f"instruction or prefix lokal cannot map: {shown}. Set it yourself "
            f"(query_prefix={first}, or query_prefix='' for none), or pass "
            "allow_unknown_prefixes=True to embed queries without one."
        )


class TextTooLong(LokalError, ValueError):
    """A text is longer than the model's context and the truncation policy is ``"error"``."""

    def __init__(self, index: int, tokens: int, limit: int) -> None:
        self.index = index
        self.tokens = tokens
        self.limit = limit
        super().__init__(
            f"text {index} has {tokens} tokens (prefix included); the model's context is "
            f"{limit}. Split it into chunks, or use truncation='warn' to cut it."
        )


class ModelMismatch(LokalError, ValueError):
    """Vectors from different models would be compared or mixed."""


class IntegrityError(LokalError):
    """A file does not match its manifest (size or sha256)."""


class EvalDataError(LokalError, ValueError):
    """An evaluation set (``lokal eval``) is missing, empty or malformed. The message names the
    file and, where there is one, the line; ``path`` and ``line`` carry them too."""

    def __init__(self, message: str, path: object = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = "" if path is None else f"{path}" + ("" if line is None else f", line {line}")
        super().__init__(f"{where}: {message}" if where else message)


class IndexFileError(LokalError):
    """Base class of the errors about a lokal index file."""


class IndexReadOnly(IndexFileError, PermissionError):
    """The index is open read-only here (for example an agent-managed index in an application)."""


class FilterError(IndexFileError, ValueError):
    """A metadata filter is malformed, uses an unknown operator, or an unsafe key."""


class MemoryBudgetError(IndexFileError, ValueError):
    """A memory budget for the search copy (``LOKAL_MEMORY_BUDGET``, ``memory_budget``) that
    is not a positive size."""


class SQLiteUnavailable(IndexFileError, MissingDependency):
    """This Python's sqlite3 cannot load extensions and no replacement library is installed."""

    def __init__(self) -> None:
        LokalError.__init__(
            self,
            "this Python's sqlite3 cannot load extensions (sqlite-vec); install a SQLite build "
            "that can: pip install sqlean-py   (or pysqlite3-binary on Linux x86-64)",
        )
        self.extra = None


class ModelVariantWarning(UserWarning):
    """An index is read with another variant (backend, quantization) of its model."""


class CentralError(LokalError):
    """The central store (``lokal.central``, PostgreSQL) refused or failed an operation: a
    schema it cannot migrate, a right the role lacks, a site it does not know."""


class CentralUnreachable(CentralError, ConnectionError):
    """The central store cannot be reached, or the connection was lost mid-way (retry later)."""


class BundleError(CentralError, ValueError):
    """A sync bundle is damaged, of another collection, or does not follow what the centre
    applied (the message names the missing range)."""
