"""The effect interpreters: what each machine's effects become on the wire or at the bank.

One function per machine turns the effects of a transition into outbox `Delivery` rows, which
the caller commits in the same transaction as the state that produced them (*persist, then
act*). Nothing here decides anything: an effect is a delivery, or it is one the caller carries
out in its own answer (the reply to the request, a proof on the stream), or it only tells.
"""

from __future__ import annotations

from collections.abc import Sequence

from node.context import Context, now_ms
from node.outbox import Delivery
from protocol import arbiter as arb
from protocol import channel as ch
from protocol.messages import EMPTY_SIGNATURE, BankAccount, CallbackAddress, ChannelRegistration
from protocol.references import Purpose, bank_reference, idempotency_key
from protocol.refunds import HoldCredit
from rails.port import TransferInstruction, payee_account

INLINE_EFFECTS: tuple[type, ...] = (ch.SendProposal, ch.SendProof, ch.SendReceipt)
"""Carried in the node's own request or answer, never through the outbox: the proposal is
POSTed by `open` (its answer may be the acceptance), proofs go on the channel's stream, the
receipt is the answer to the proofs it acknowledges."""
NOTICES: tuple[type, ...] = (ch.NotifyOpened, ch.NotifyCloseRequested, ch.NotifyDispute,
                             ch.NotifySettled, ch.NotifyCheckpointRequested)
"""Effects that only tell the node's policy and logs something; nothing goes out for them."""


def transfer_spec(key: str, reference: str, purpose: Purpose, party: int, amount_minor: int,
                  currency: str, creditor: BankAccount) -> bytes:
    """A rail submission as an outbox payload (a TransferInstruction); `key` is its idempotency
    key (a retry never pays twice)."""
    return TransferInstruction(
        idempotency_key=key, purpose=purpose.value, party=party, amount_minor=amount_minor,
        currency=currency, reference=reference,
        creditor=payee_account(creditor.scheme, creditor.identification, creditor.name),
    ).encode()


async def channel_deliveries(ctx: Context, state: ch.ChannelState,
                             effects: Sequence[ch.Effect], *,
                             inline: tuple[type, ...] = INLINE_EFFECTS) -> list[Delivery]:
    """The outbox rows for a channel transition's effects (`inline` ones the caller carries
    out itself). Closes, claims and evidence are urgent: time-critical, never behind others."""
    out: list[Delivery] = []
    terms = state.terms
    for effect in effects:
        if isinstance(effect, (*inline, *NOTICES)):
            continue
        if isinstance(effect, ch.SendAcceptance):
            opener = await ctx.peer(terms.opener.hex())
            out.append(Delivery("send", f"{opener.url}/p2p/acceptance",
                                effect.acceptance.encode(), recipient=opener.node_id,
                                purpose="acceptance"))
        elif isinstance(effect, ch.RegisterWithArbiter):
            out += await _funding(ctx, state, effect)
        elif isinstance(effect, ch.SendClose):
            peer = await ctx.peer(terms.parties()[state.them].hex())
            out.append(Delivery("send", f"{peer.url}/p2p/close", effect.close.encode(),
                                recipient=peer.node_id, purpose="close", urgent=True))
        elif isinstance(effect, ch.SendCheckpoint):
            peer = await ctx.peer(terms.parties()[state.them].hex())
            out.append(Delivery("send", f"{peer.url}/p2p/checkpoint",
                                effect.checkpoint.encode(), recipient=peer.node_id,
                                purpose="checkpoint"))  # the latest supersedes
        else:
            arbiter = await ctx.peer(terms.arbiter.hex())
            path, body, purpose = _to_arbiter(effect)
            out.append(Delivery("send", f"{arbiter.url}/p2p/{path}", body,
                                recipient=arbiter.node_id, purpose=purpose, urgent=True))
    return out


def _to_arbiter(effect: ch.Effect) -> tuple[str, bytes, str]:
    if isinstance(effect, ch.SubmitClose):
        return "close", effect.close.encode(), "close-submit"
    if isinstance(effect, ch.SubmitUnilateralClose):
        return "unilateral", effect.claim.encode(), "unilateral"
    if isinstance(effect, ch.SubmitEvidence):
        return "evidence", effect.evidence.encode(), "evidence"
    if isinstance(effect, ch.SubmitCheckpoint):
        return "checkpoint", effect.checkpoint.encode(), "checkpoint-submit"
    raise AssertionError(f"no delivery for the channel effect {effect!r}")


async def _funding(ctx: Context, state: ch.ChannelState,
                   effect: ch.RegisterWithArbiter) -> list[Delivery]:
    """Register with the arbiter (naming where its messages reach us, signed) and pay our
    deposit into escrow."""
    arbiter = await ctx.peer(state.terms.arbiter.hex())
    callback = CallbackAddress(state.channel_id, ctx.signer.node_id, ctx.config.public_url,
                               now_ms(), EMPTY_SIGNATURE).signed_by(ctx.signer)
    out = [Delivery("send", f"{arbiter.url}/p2p/register",
                    ChannelRegistration(effect.proposal, effect.acceptance, callback).encode(),
                    recipient=arbiter.node_id, purpose="register")]
    deposit = state.terms.deposits()[state.us]
    if deposit:
        cid = state.channel_id
        out.append(Delivery("deposit", "", transfer_spec(
            idempotency_key(cid, Purpose.DEPOSIT, state.us),
            bank_reference(cid, Purpose.DEPOSIT, state.us), Purpose.DEPOSIT, state.us, deposit,
            state.terms.currency, state.terms.escrow_account), recipient="", purpose="deposit"))
    return out


def escrow_deliveries(state: arb.ArbiterState, effects: Sequence[arb.Effect],
                      urls: Sequence[str]) -> list[Delivery]:
    """The outbox rows for an arbiter transition's effects, to the parties at the callback
    `urls` they registered (a party that named none yet is caught up when it registers)."""
    parties = [(u, p.hex()) for u, p in zip(urls, state.terms.parties(), strict=True) if u]
    out: list[Delivery] = []
    for effect in effects:
        if isinstance(effect, arb.SendFundingConfirmation):
            depositor = state.terms.party_index(effect.confirmation.depositor)
            out += [Delivery("send", f"{u}/p2p/funding", effect.confirmation.encode(),
                             recipient=party, purpose=f"funding:{depositor}")
                    for u, party in parties]
        elif isinstance(effect, arb.SendTopUpConfirmation):
            depositor = state.terms.party_index(effect.confirmation.depositor)
            out += [Delivery("send", f"{u}/p2p/topup", effect.confirmation.encode(),
                             recipient=party, purpose=f"topup:{depositor}")
                    for u, party in parties]
        elif isinstance(effect, arb.SendPayoutNotice):
            out += [Delivery("send", f"{u}/p2p/payout", effect.notice.encode(), recipient=party,
                             purpose="payout-notice", urgent=True) for u, party in parties]
        elif isinstance(effect, arb.ForwardDispute):
            # Both parties hear it, signed: the other side must answer before the deadline,
            # the claimant learns when the payout is decided.
            notice = effect.notice
            assert notice is not None, "the daemon passes its key with every claim"
            # Urgent only with money in escrow: registering a channel costs nothing, so
            # claims on empty channels (anyone's Sybil pairs) must not each get a socket now.
            out += [Delivery("send", f"{u}/p2p/dispute", notice.encode(), recipient=party,
                             purpose="dispute", urgent=state.held() > 0)
                    for u, party in parties]
        elif isinstance(effect, arb.SendPayoutReturned):
            out += [Delivery("send", f"{u}/p2p/payout-returned", effect.notice.encode(),
                             recipient=party, purpose=f"payout-returned:{effect.notice.reference}",
                             urgent=True) for u, party in parties]
        elif isinstance(effect, arb.SendTransferNotice):
            tn = effect.notice  # one row per outcome: a later one never replaces an earlier
            out += [Delivery("send", f"{u}/p2p/transfer-notice", tn.encode(), recipient=party,
                             purpose=f"transfer:{tn.reference}:{tn.status}")
                    for u, party in parties]
        elif isinstance(effect, HoldCredit):
            continue  # EscrowService._credit keeps it as an unapplied credit, in its own commit
        elif isinstance(effect, arb.SubmitPayout):
            out.append(Delivery("payout", "", transfer_spec(
                effect.idempotency_key, effect.reference, Purpose.PAYOUT, effect.party,
                effect.amount, effect.currency, effect.account),
                recipient="", purpose=_payout_purpose(effect)))
        else:
            raise AssertionError(f"no delivery for the arbiter effect {effect!r}")
    return out


def _payout_purpose(effect: arb.SubmitPayout) -> str:
    """The outbox dedup key of a payout: one per payment (checkpoint and attempt), so paying a
    returned payout again, or two checkpoints, never replace each other's pending row."""
    if (effect.checkpoint, effect.attempt) == (0, 0):
        return f"payout:{effect.party}"
    return f"payout:{effect.party}:{effect.checkpoint}:{effect.attempt}"
