"""Batch jobs: submit a file, get an id, poll or get a webhook; long audio runs in parallel chunks.

Modules, one job each:
  storage       blobs (upload, chunks, results) in a shared directory behind a small interface
  model         the job record, statuses, Redis key names, the public JSON
  chunking      cut decoded audio at silences into chunks of bounded length, as it streams in
  prepare       decode an upload and store its chunks, one chunk in memory at a time
  merge         join chunk transcripts: offset timestamps, continuous segments and words
  store         job state in Redis and the one atomic status change (Lua)
  streams       consumer-group reading of a Redis stream with capacity, keep-alive and reclaim
  orchestrator  prepare -> enqueue chunk tasks -> merge; webhooks; TTLs   (`dalston orchestrator`)
  health        the orchestrator's /health, /ready and /metrics listener
  worker        queue mode of an engine server                          (`dalston serve ID --queue`)
  webhooks      signed, retried webhook delivery
  routes        the gateway's /v1/jobs API
See docs/JOBS.md for the API, the guarantees and the failure cases.
"""
