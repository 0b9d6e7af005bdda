"""meterline's channel protocol, sans-I/O.

Nothing in this package performs I/O, reads a clock, draws randomness or logs: time (`now_ms`) and
randomness (salts) are arguments, and everything is testable by a plain synchronous call.
The normative description is ``specs/0001``–``0004``; this package is its reference implementation.
"""

PROTOCOL_VERSION = 1
