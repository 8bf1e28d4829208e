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

Modules: ``measure`` (the measurements), ``load`` (the throughput's load generator), ``cpu``
(other processes' CPU, psutil), ``results`` (the records and ratios), ``targets`` (goals as data),
``report`` (tables), ``figures`` (charts), ``__main__`` (options and the run).
"""
