"""Thin adapters that put lokal's local models into LangChain and LlamaIndex.

``lokal.integrations.langchain`` needs the ``langchain`` extra, ``lokal.integrations.llama_index``
the ``llamaindex`` extra; neither is imported by ``import lokal``.
"""
