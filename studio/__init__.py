"""latentzoo studio: a local web app and HTTP API over the zoo (``latentzoo serve``, the ``studio`` extra).

- ``adapter``: a job's JSON body -> a ``SampleRequest`` checked by ``core.runtime.request.validate``,
  then the calls the CLI makes, on a cached pipeline; no FastAPI, no torch at import.
- ``store``: the SQLite job store beside the outputs (jobs survive a restart).
- ``worker``: one thread that runs jobs in order, with an LRU cache of built pipelines and
  cancellation within one sampler step.
- ``catalog``: the registry as the page sees it (pipelines, components, the composer's check
  with every alternative's fit and reason).
- ``security``: loopback by default, Bearer token, Host / Origin / Sec-Fetch-Site checks.
- ``app``: the FastAPI app (``/api/v1``, the WebSocket, the static page in ``static/``).

Only ``app`` (and ``security``) import FastAPI / Starlette; ``latentzoo serve`` imports them when it runs.
"""
