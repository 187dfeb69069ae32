"""A LangChain retriever over your own text with a local embedding model.

Swap ``LocalEmbeddings()`` into any chain that takes LangChain ``Embeddings``; the model's
query and document prefixes are applied for you, and nothing leaves the machine.

    python examples/langchain_retriever.py
"""

from __future__ import annotations

from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore

from lokal.integrations.langchain import LocalEmbeddings

NOTES = [
    (
        "pump.md",
        "To reset pump P-101, hold the red reset button for five seconds, then check "
        "that the pressure gauge returns to 2 bar.",
    ),
    ("safety.md", "Wear ear protection in hall B while the compressors are running."),
    ("shifts.md", "The night shift hands over to the morning shift at 06:00 in the control room."),
    (
        "filters.md",
        "Replace the intake filters every 500 operating hours or when the "
        "differential pressure exceeds 0.3 bar.",
    ),
]


def main() -> None:
    embeddings = LocalEmbeddings()  # or LocalEmbeddings(model="path/to/model.gguf")
    docs = [Document(page_content=text, metadata={"source": name}) for name, text in NOTES]
    retriever = InMemoryVectorStore.from_documents(docs, embeddings).as_retriever(
        search_kwargs={"k": 1}
    )
    for question in ("How do I restart the pump?", "When do the filters need changing?"):
        best = retriever.invoke(question)[0]
        print(f"{question}\n  -> {best.metadata['source']}: {best.page_content}")


if __name__ == "__main__":
    main()
