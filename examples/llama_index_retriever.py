"""A LlamaIndex retriever with a local embedding model.

python examples/llama_index_retriever.py
"""

from __future__ import annotations

from llama_index.core import Document, Settings, VectorStoreIndex

from lokal.integrations.llama_index import LocalEmbedding

NOTES = {
    "pump.md": "To reset pump P-101, hold the red reset button for five seconds, then check "
    "that the pressure gauge returns to 2 bar.",
    "safety.md": "Wear ear protection in hall B while the compressors are running.",
    "filters.md": "Replace the intake filters every 500 operating hours or when the "
    "differential pressure exceeds 0.3 bar.",
}


def main() -> None:
    Settings.embed_model = LocalEmbedding()  # the embedded default, offline
    index = VectorStoreIndex.from_documents(
        [Document(text=text, metadata={"source": name}) for name, text in NOTES.items()]
    )
    retriever = index.as_retriever(similarity_top_k=1)
    for question in ("How do I restart the pump?", "Do I need hearing protection?"):
        node = retriever.retrieve(question)[0]
        print(
            f"{question}\n  -> {node.metadata['source']} ({node.score:.2f}): {node.get_content()}"
        )


if __name__ == "__main__":
    main()
