"""The vision stage: backends, prompts, grounding parsers, findings from what a model said."""
