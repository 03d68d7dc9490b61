"""The SQL catalog: models, engines, the job queue, and the records the receiver writes."""
