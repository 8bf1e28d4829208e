"""What both halves of every scheme import: the service ships it, the client (lib/) imports it.

- ``specs``: one typed, frozen record per scheme (name, version, parameters, result layout and
  the facts the UI shows) and the one registry ``SPECS``; the request's descriptor and the
  service's check of it both derive from the record.
- ``seal_header``: the 16-byte header every serialized Microsoft SEAL object starts with.
- ``seal4``: Microsoft SEAL 4 (``tenseal.sealapi``): serialization, context, plaintext crafting,
  header checks and checked loading, for ``ckks`` and ``bfv``.
- ``model_files``: where the trained model lives (Azure's ``<name>/<version>`` layout).
- ``seal3``: the SEAL 3.5 format checks of encrypted-inference 0.9 (``ei``): object framing and
  the full ciphertext validator that runs before any bytes reach its native code.

Nothing here imports ``lib`` or the service's server-only machinery (key fetching, the native
child process); errors are ``ValueError`` subclasses that each half turns into its own error type.
"""
