"""lokal's demo: index a real corpus with the embedded default model and answer questions.

The corpus is Python's own language reference (``pydoc_data.topics``, shipped with every
Python): about 1,500 paragraphs written outside this project. They are embedded into a lokal
index file (one SQLite file that records its model), which is then reopened with no model
named - it loads the one the file records - and queried through a LangChain retriever.
Everything runs on this machine: no API key, no network.

    python examples/demo.py [--limit N] [--index FILE]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path
from pydoc_data.topics import topics

from langchain_core.documents import Document

from lokal.integrations.langchain import LocalEmbeddings, LokalVectorStore

QUESTIONS = [
    "How do I add debugging checks that are removed when optimizing?",
    "What happens when a generator is closed?",
    "How can a class customize attribute access?",
    "Which statement leaves a loop early?",
]


def corpus(limit: int | None) -> list[Document]:
    docs = []
    for topic in sorted(topics):
        for n, block in enumerate(re.split(r"\n\s*\n", topics[topic])):
            text = " ".join(block.split())
            if len(text.split()) >= 12 and not re.search(r"[*=]{3}", block):
                docs.append(Document(page_content=text, metadata={"source": f"{topic}#{n}"}))
    return docs[:limit] if limit else docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, help="embed only the first N paragraphs")
    parser.add_argument("--index", type=Path, help="index file to write (default: a temp dir)")
    args = parser.parse_args()
    path = args.index or Path(tempfile.mkdtemp(prefix="lokal-demo-")) / "reference.db"
    if path.exists():
        parser.error(f"{path} exists already; pass another --index")

    embeddings = LocalEmbeddings()  # the embedded default, offline
    print(f"model: {embeddings.embedder.profile.describe()}")
    print(f"via:   {embeddings.embedder.backend_name} ({embeddings.embedder.resolved.reason})")
    docs = corpus(args.limit)
    start = time.perf_counter()
    LokalVectorStore.from_documents(docs, embeddings, path=path).close()
    took = time.perf_counter() - start
    print(
        f"indexed {len(docs)} paragraphs of Python's language reference in {took:.1f} s "
        f"({len(docs) / took:.0f}/s) into {path}\n"
    )

    store = LokalVectorStore(path)  # no model named: the file's own model is loaded
    retriever = store.as_retriever(search_kwargs={"k": 3})
    for question in QUESTIONS:
        print(f"Q: {question}")
        for doc in retriever.invoke(question):
            snippet = doc.page_content[:110] + ("..." if len(doc.page_content) > 110 else "")
            print(f"   [{doc.metadata['source']}] {snippet}")
        print()
    store.close()


if __name__ == "__main__":
    main()
