"""``lokal serve``: local embeddings, reranking and search over HTTP, in the shapes that existing
tools already speak, so a program in any language can use lokal by changing only a URL.

- Ollama: ``POST /api/embed`` (``input``, ``truncate``, ``dimensions``), ``POST /api/embeddings``
  (``prompt``), ``GET /api/tags``, ``POST /api/show`` (details, ``model_info`` with the
  architecture's ``embedding_length`` and ``context_length``, capabilities ``["embedding"]``),
  ``GET /api/ps`` (the loaded model, never unloaded), ``GET /api/version`` (lokal's version).
  Errors are ``{"error": "..."}``; another model name gets Ollama's own ``model "x" not found,
  try pulling it first`` (404; ``model 'x' not found`` from ``/api/show``, as Ollama says it).
- OpenAI: ``POST /v1/embeddings`` (text or a list of texts; token arrays are refused with a
  clear error; ``dimensions``; ``encoding_format`` ``float`` or ``base64``), ``GET /v1/models``.
  Errors are ``{"error": {"message", "type", "param", "code"}}``.
- Cohere: ``POST /v1/embed`` and ``POST /v2/embed`` (``texts``, ``input_type``,
  ``embedding_types`` float, base64, binary or ubinary, ``truncate`` END or NONE,
  ``output_dimension``), ``POST /v1/rerank`` and ``POST /v2/rerank`` (``model``, ``query``,
  ``documents``, ``top_n``, ``return_documents``, ``max_tokens_per_doc``). Errors are
  ``{"message": "..."}``.
- lokal: ``POST /v1/search`` over a lokal index (``query``, ``k``, ``filter``, ``hybrid``
  (default true: vector and full text fused; false: vectors alone), ``rerank``),
  ``GET /v1/status`` (request and model-call counters), ``GET /health``.

Prefixes come from the model's profile. The embedding APIs take an extra ``input_type``
(``"query"`` or ``"document"``, also Cohere's ``"search_query"``/``"search_document"``, and its
``"classification"``/``"clustering"``, which take the document path: no retrieval instruction);
without it the server's default applies (``--input-type``, ``document`` unless told). Length
follows the core policy: texts longer than the context are cut and every response lists them
under ``truncated`` (``index``, ``tokens``, ``limit``); ``truncate: false`` (Cohere: ``NONE``;
or ``--truncation error``) refuses them instead. ``dimensions`` (Cohere: ``output_dimension``)
slices to a Matryoshka size the profile lists and re-normalizes; other sizes are refused unless
the server runs with ``--force-dimensions``.

Safe by default (:mod:`lokal.agent.server.door`): loopback only unless an API key is set (then
required as a bearer token on every endpoint but ``/health``); an index whose file others may
not read is served with a key (generated, readable like the index) or over a Unix socket with
the index's mode and group; the ``Host`` header must name the server and browsers' requests from
other origins are refused; JSON endpoints take ``Content-Type: application/json`` only; request
headers and bodies have read deadlines and one client a bounded number of connections; bodies,
inputs per request and the queue are bounded; bad input gets a 4xx in the API's own shape.
Models run on worker threads that batch concurrent requests (:mod:`lokal.agent.server.worker`);
the event loop never waits on a model.

The package: ``settings`` (ServeSettings), ``launch`` (load the models, run: what ``lokal
serve`` calls), ``app`` (the routes, the API key, reading bodies; the uvicorn server), ``door``
(Host/Origin, keys, the Unix socket, slow clients), one module per API dialect (``ollama``,
``openai``, ``cohere``, ``search`` for lokal's own /v1/search and /v1/status) over ``base``
(the state and steps they share), ``protocol`` (request fields, errors in each API's shape,
vector encodings), ``models`` (a served model's names and facts), ``worker`` (the model worker).
"""
