"""Import every module of the installed lokal package; used by ``make wheel-check`` on the
oldest Python lokal supports (3.10), in a base install without extras.

A module may refuse with lokal's own :class:`~lokal.errors.MissingDependency` (it names the
extra to install); any other error fails: a syntax or standard-library name newer than this
Python (``tomllib``, ``datetime.UTC``, ``typing.Self`` at import time), or a raw ImportError of
a third-party module where lokal should name its extra. Prints what it found; exit 1 on a
failure.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import traceback

#: Modules users reach only through an adapter module that names its extra first
#: (lokal.integrations.langchain / .llama_index): without the extra they need not import.
BEHIND_AN_ADAPTER = {
    "lokal.integrations.shared",
    "lokal.integrations.langchain_store",
    "lokal.integrations.langchain_central",
    "lokal.integrations.llama_index_store",
    "lokal.integrations.llama_index_central",
}


def main() -> int:
    import lokal
    from lokal.errors import MissingDependency

    names = ["lokal"] + [
        m.name for m in pkgutil.walk_packages(lokal.__path__, "lokal.", onerror=lambda _: None)
    ]
    needs: dict[str, list[str]] = {}
    failed = []
    for name in sorted(names):
        try:
            importlib.import_module(name)
        except MissingDependency as exc:
            needs.setdefault(exc.extra or "?", []).append(name)
        except ImportError:
            if name in BEHIND_AN_ADAPTER:
                needs.setdefault("langchain] or lokal[llamaindex", []).append(name)
            else:
                failed.append(name)
                traceback.print_exc()
        except Exception:  # every other failure is what this script is for
            failed.append(name)
            traceback.print_exc()
    version = ".".join(map(str, sys.version_info[:3]))
    print(f"Python {version}: {len(names) - len(failed)} of {len(names)} modules import")
    for extra, modules in sorted(needs.items()):
        print(f"  need lokal[{extra}]: {', '.join(modules)}")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
