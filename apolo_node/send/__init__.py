"""Results back to the PACS: re-linking through the vault, the C-STORE SCU, the retry schedule.

The outbox itself lives in the catalog (``apolo_node.catalog.outbox``); the worker that drains
it is ``apolo_node.pipeline.sender``.
"""
