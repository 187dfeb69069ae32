"""Ollama's embedding API."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from lokal import __version__
from lokal.agent.server.base import ServiceBase
from lokal.agent.server.models import Served, human_count
from lokal.agent.server.protocol import (
    ApiError,
    str_field,
    texts_field,
    truncated_report,
    vector_rows,
)


class OllamaApi(ServiceBase):
    """Ollama's embedding API: /api/embed, /api/embeddings, /api/tags, /api/show, /api/ps,
    /api/version."""

    async def ollama_embed(self, body: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter_ns()
        name = self.embedding_model_name(body, "ollama")
        raw = body.get("input")
        texts = (
            [] if raw is None or raw == "" else texts_field(raw, "input", self.settings.max_inputs)
        )
        if not texts:  # Ollama's way to load a model: nothing to embed (options still checked)
            self.input_kind(body)
            self.refuse_long(body)
            self.requested_dimensions(body)
            return {"model": name, "embeddings": [], "total_duration": 0, "load_duration": 0}
        vectors, result = await self.embed_request(body, texts)
        return {
            "model": name,
            "embeddings": await vector_rows(vectors),
            "total_duration": time.perf_counter_ns() - started,
            "load_duration": 0,
            "prompt_eval_count": result.tokens,
            "truncated": truncated_report(result.truncated),
        }

    async def ollama_embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        self.embedding_model_name(body, "ollama")
        prompt = str_field(body, "prompt")
        if not prompt:
            return {"embedding": []}
        vectors, result = await self.embed_request(body, [prompt])
        return {"embedding": vectors[0].tolist(), "truncated": truncated_report(result.truncated)}

    async def ollama_tags(self, body: dict[str, Any]) -> dict[str, Any]:
        # Ollama's world has embedding models only: the reranker is listed by /v1/models
        return {"models": [await self.ollama_model(self.embedding)]}

    async def ollama_show(self, body: dict[str, Any]) -> dict[str, Any]:
        name = str_field(body, "model") or str_field(body, "name")  # "name": older clients
        if not name:
            raise ApiError(400, "'model' is required", param="model")
        if not self.embedding.matches(name):
            raise ApiError(404, f"model '{name}' not found")
        served = self.embedding
        embedder = served.model
        listed = await self.ollama_model(served)
        facts = await asyncio.to_thread(served.facts)
        arch = facts["architecture"]
        info: dict[str, Any] = {"general.architecture": arch, "general.name": embedder.profile.name}
        if facts["parameter_count"]:
            info["general.parameter_count"] = facts["parameter_count"]
        info |= {
            f"{arch}.embedding_length": embedder.dimension,
            # the context lokal applies (the profile's, when shorter than the file's)
            f"{arch}.context_length": embedder.context_length,
            "lokal.backend": embedder.resolved.backend,
            "lokal.query_prefix": embedder.profile.query_prefix,
            "lokal.document_prefix": embedder.profile.document_prefix,
        }
        return {
            "license": "",
            "modelfile": "",
            "parameters": "",
            "template": "",
            "details": listed["details"],
            "model_info": info,
            "capabilities": ["embedding"],
            "modified_at": listed["modified_at"],
        }

    async def ollama_ps(self, body: dict[str, Any]) -> dict[str, Any]:
        listed = await self.ollama_model(self.embedding)
        return {
            "models": [
                {
                    **listed,
                    "expires_at": self.expires_at,
                    "size_vram": 0,
                    "context_length": self.embedding.model.context_length,
                }
            ]
        }

    async def ollama_version(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"version": __version__}

    async def ollama_model(self, served: Served) -> dict[str, Any]:
        """A model as Ollama's listings show one."""
        info = served.describe()
        facts = await asyncio.to_thread(served.facts)
        tag = info["name"] if ":" in info["name"] else info["name"] + ":latest"
        return {
            "name": tag,
            "model": tag,
            "modified_at": info["modified_at"],
            "size": info["size"],
            "digest": "",
            "details": {
                "parent_model": "",
                "format": "gguf" if info["backend"] == "gguf" else "safetensors",
                "family": info["family"],
                "families": [info["family"]],
                "parameter_size": human_count(facts["parameter_count"]),
                "quantization_level": str(info["quantization"]).upper(),
            },
        }
