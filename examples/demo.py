"""lokal's demo: embed a real corpus with the embedded default model and answer questions.

The corpus is Python's own language reference (``pydoc_data.topics``, shipped with every
Python): about 1,500 paragraphs written outside this project. Everything runs on this machine:
no API key, no network.

    python examples/demo.py [--limit N]
"""

from __future__ import annotations

import argparse
import re
import time
from pydoc_data.topics import topics

from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore

from lokal.integrations.langchain import LocalEmbeddings

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
    args = parser.parse_args()

    embeddings = LocalEmbeddings()  # the embedded default, offline
    print(f"model: {embeddings.embedder.profile.describe()}")
    print(f"via:   {embeddings.embedder.backend_name} ({embeddings.embedder.resolved.reason})")
    docs = corpus(args.limit)
    start = time.perf_counter()
    store = InMemoryVectorStore.from_documents(docs, embeddings)
    took = time.perf_counter() - start
    print(
        f"embedded {len(docs)} paragraphs of Python's language reference in {took:.1f} s "
        f"({len(docs) / took:.0f}/s)\n"
    )
    retriever = store.as_retriever(search_kwargs={"k": 3})
    for question in QUESTIONS:
        print(f"Q: {question}")
        for doc in retriever.invoke(question):
            snippet = doc.page_content[:110] + ("..." if len(doc.page_content) > 110 else "")
            print(f"   [{doc.metadata['source']}] {snippet}")
        print()


if __name__ == "__main__":
    main()
