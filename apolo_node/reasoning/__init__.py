"""The reasoning stage: a clinician's question answered from the catalog's findings, with citations.

Retrieval reads catalog rows only (``retrieval``); an answerer (``backend``: extractive, or a
language model through transformers or an OpenAI-compatible server) writes the answer from that
evidence; ``ask`` ties them together and records every question and answer for audit.
"""
