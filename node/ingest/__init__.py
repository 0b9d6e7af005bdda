"""Usage events from outside the admin API: the `[ingest]` settings and the MQTT subscriber."""
