"""A run: its lifecycle (context.py), one document's preparation and outcome (document.py), the one
sequencer of a document's calls (sequence.py) with its result kinds (the summary in document.py,
tasks.py, questions.py) and callers (caller.py, batch_mode.py), packing (packer.py), the drivers
(pipeline.py for a thread pool, shards.py for fan-out), the backend, settings and the report."""
