"""fedrec, the command-line application: ``fedrec simulate`` / ``fedrec demo`` and the
coordinator's server commands behind one ``fedrec`` command.

The application sits above both libraries: it may import ``coordinator`` (the server)
and ``participant_sdk`` (the client SDK); neither of them imports it. Simulation-only
pieces live here rather than in the SDK a partner embeds: user partitions
(:mod:`fedrec.partition`), the synthetic data set (:mod:`fedrec.synthetic`) and the
MovieLens download (:mod:`fedrec.datasets`).
"""
