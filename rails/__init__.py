"""Bank rails: turn "pay this amount from this account to that one" into what a bank takes.

`rails/` knows nothing about channels. Every adapter implements the small port in
:mod:`rails.port`; every submission carries an idempotency key that a retry reuses, and the
adapter persists the key with its answer so a retry, even across a restart, never pays twice.
"""
