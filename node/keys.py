"""Typed application keys (aiohttp's "no singletons"), all in one place."""

from __future__ import annotations

from aiohttp import web

from node.channels import ChannelService
from node.config import Config
from node.context import Context
from node.escrow import EscrowService
from node.outbox import Outbox
from node.transfers import Transfers
from node.webhooks import Webhooks
from protocol.crypto import Signer

CONFIG = web.AppKey("config", Config)
SIGNER = web.AppKey("signer", Signer)
CONTEXT = web.AppKey("context", Context)
CHANNELS = web.AppKey("channels", ChannelService)
ESCROW = web.AppKey("escrow", EscrowService)
TRANSFERS = web.AppKey("transfers", Transfers)
OUTBOX = web.AppKey("outbox", Outbox)
WEBHOOKS = web.AppKey("webhooks", Webhooks)
TOKEN = web.AppKey("token", str)
WEBSOCKETS = web.AppKey("websockets", dict)
"""Inbound update streams by channel id, one per channel (the newest replaces the one before:
node.api.peer.stream); closed at shutdown so the daemon stops at once."""
