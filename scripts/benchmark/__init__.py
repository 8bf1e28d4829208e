"""Benchmark: every encryption scheme against the seed's ``EIServer.predict``, measured in one run.

    .venv/bin/python -m scripts.benchmark [--schemes ei,ckks,bfv] [--warm 5] [--skip-reference]
                                          [--throughput-seconds 5] [--accuracy-digits 10]
                                          [--figures DIR | --no-figures]

It starts its own Azurite and scoring service (2 workers) on free ports and, for each scheme:
- makes a key pair and uploads its public keys with the product's ``EncryptedSession`` (timed
  separately: key generation, key bytes, upload);
- in process: the session against ``ScoringService.handle`` in this process (keys fetched from
  Azurite), key cache cold (miss) and warm (median of --warm), encrypt and decrypt around it;
- over HTTP: a second session against the real service, cold and warm, then a few real MNIST
  test digits for accuracy;
- throughput: concurrent clients fire the first session's requests at the 2-worker service for
  --throughput-seconds after a warm-up and count the 200 responses per second; a sample of the
  responses is decrypted and checked against the plaintext model's label.
The reference is the seed's own path, in process: its client's encrypt, ``EIServer.predict`` (what
the seed's score.py calls), and its client's decrypt (about 20 s; --skip-reference leaves it out).

It prints one table of figures (a column per scheme), one of ratios to the reference, and whether
each target is met (printed, never asserted: the first table's last row says how much CPU other
processes took meanwhile), then writes charts of time, bytes and error as PNG and SVG
(artifacts/benchmark/ by default). Everything it starts is stopped on exit, Ctrl-C and SIGTERM.

The mixed load (issue 10, "a room of users") is a mode of its own:

    .venv/bin/python -m scripts.benchmark --mixed [--replicas 1,2] [--sessions bfv=6,ckks=6,ei=4]
                                          [--predictions 10] [--warmup N]

For each topology (1 = today's plain service, N >= 2 = the local twin: N replicas behind nginx,
with an endpoint key) it starts its own stack on free ports, then one process per session (each
its own key pair, keys uploaded and every request encrypted before anything is timed), releases
them together, and times each POST /score from request sent to full response read. Each session
makes its warm-up requests (untimed: the first is its key-cache miss) and then --predictions
timed ones back to back. Afterwards every answer is decrypted and checked against the plaintext
model. It prints per scheme: requests, p50, p95, max, p95 while ei ran, predictions/s, wrong,
lost, timed key-cache misses; where the time went (the server's timings_ms against the round
trip); the CPU; and the targets (``targets.MIXED_TARGETS``). Exit status 1 if a target is missed.

Modules: ``measure`` (the measurements), ``load`` (the throughput's load generator), ``cpu``
(other processes' CPU, psutil), ``results`` (the records and ratios), ``targets`` (goals as data),
``report`` (tables), ``figures`` (charts), ``__main__`` (options and the run); for the mixed load
``mixed`` (samples and statistics), ``mixed_session`` (one session's process), ``mixed_run`` (a
topology's stack and processes).
"""
