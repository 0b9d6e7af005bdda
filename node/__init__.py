"""The meterline daemon: peer API, admin API, channel and arbiter services, storage, CLI."""
