"""`charlstm serve`: an OpenAI-style HTTP API over continuous batching.

How this folder works, outside in: transport.py (the socket, uvicorn with time and size
limits, stopping on signals) → guard.py (Host, Origin, API key; the access log) → server.py
(the app: routes, jobs) → batching.py (the engine: jobs as rows of one step). replies.py
shapes what comes back (completion or chat completion, whole or streamed, with logprobs and
echo); chat.py writes chat messages as a model's transcript. requests.py declares what a
request may say and how a refusal looks (ApiError).
"""
