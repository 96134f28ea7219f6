"""Secure aggregation (Bonawitz et al., CCS 2017): the coordinator learns only the sum.

Imported only when a federation uses secure aggregation; ``import participant_sdk`` never
loads it. Two kinds of module live here:

- shared by both sides (the coordinator may import these, see docs/architecture.md):
  ``shamir`` (t-of-n secret sharing), ``prg`` (the ChaCha20 mask generator),
  ``fixed_point`` (floats into Z_2^32 and back), ``keys`` (X25519 agreement, HKDF, the
  round binding) and ``messages`` (what travels between the phases);
- the participant's side only: ``client`` (its state machine, key generation, share
  encryption). The coordinator may not import it.

This ``__init__`` imports nothing, so importing a shared module loads no client code.
"""
