"""A sandbox bank (ASPSP) that speaks UK Open Banking Read/Write v3.1.11 over HTTP.

Started by ``meterline bank start``. It holds accounts, balances, consents, payments,
transactions and idempotency records in one SQLite file (WAL) in its data directory, so a
restart loses nothing; injected faults live in memory and a restart clears them.

What it speaks (paths as in the published OpenAPI files, servers ``/open-banking/v3.1/pisp`` and
``/open-banking/v3.1/aisp``):

- PISP: ``POST /domestic-payment-consents``, ``GET /domestic-payment-consents/{ConsentId}``,
  ``GET …/{ConsentId}/funds-confirmation``, ``POST /domestic-payments``,
  ``GET /domestic-payments/{DomesticPaymentId}`` and ``…/payment-details`` (which carries a
  rejection's reason code in ``StatusDetail.Status``, ``StatusReason`` ``ProprietaryRejection``).
- AISP: ``GET /accounts``, ``GET /accounts/{AccountId}``, ``GET /accounts/{AccountId}/balances``,
  ``GET /accounts/{AccountId}/transactions`` (``fromBookingDateTime``/``toBookingDateTime``,
  inclusive, timezone ignored as the spec says; one page).

Decisions and simplifications, deliberately:

- **Auth.** OAuth 2.0 (:mod:`rails.sandbox.auth`): ``POST /as/token`` with the client-credentials
  and authorization-code grants, the client authenticated by a ``private_key_jwt`` assertion
  signed with its registered key; tokens expire (``token_ttl_s``) and are kept only as SHA-256
  digests, in memory. The PSU's authorisation is ``GET /as/authorise`` (the PSU's decision is a
  query parameter a test sets), which redirects back with a code; the code's token is bound to
  the consent and required for its payment. The bank may also decide a consent itself
  (``POST /_sandbox/consents/{id}/authorise`` or ``/reject``); without ``--manual-approval`` a
  consent is ``Authorised`` on creation. A client may use only the accounts it was registered
  with, for PISP (as debtor) and AISP alike; another client's account is 403; there is no
  account-access-consent resource.
- **Signatures.** Every POST must carry a detached PS256 ``x-jws-signature`` (no ``b64``; ``kid``
  = the registered key's id; ``iss`` = ``{org-id}/{software-statement-id}`` as registered; ``tan``
  = ``openbanking.org.uk``; ``iat``
  within 5 minutes). Every OB response is signed by the bank's own key
  (``bank-signing-key.pem`` in the data dir, public half at ``GET /_sandbox/bank-key``).
- **Idempotency.** ``x-idempotency-key`` (≤ 40 characters) is required on POSTs and scoped per
  client and per endpoint. The same key with the same body (compared as canonical JSON) answers
  201 with the resource created the first time, as it is now; with another body it is refused with
  400 ``UK.OBIE.Header.Invalid``. Only created resources are remembered: a refused request (an
  overdraft, say) creates nothing, and the same key may be sent again once the cause is fixed.
  Keys never expire (stricter than the 24 h the profile requires).
- **On-us only.** A payment to an account this bank does not hold is **refused** at consent
  creation with 400 ``UK.OBIE.Resource.NotFound`` (path
  ``Data.Initiation.CreditorAccount.Identification``): the sandbox has no clearing to send money
  out through, and refusing keeps every booked debit matched by a credit (money is conserved).
  An unknown debtor account is refused the same way; an account the client was not registered for
  is 403.
- **Booking.** ``POST /domestic-payments`` books the debit and the credit in one SQLite
  transaction, together with the payment, the consent's move to ``Consumed`` and the idempotency
  record. The payment is then ``AcceptedCreditSettlementCompleted``. Both legs appear in account
  transactions: ``TransactionReference`` is the remittance ``Reference``, the credit carries the
  debtor's account and name in ``DebtorAccount`` (the debit the creditor's in ``CreditorAccount``),
  and ``SupplementaryData`` carries ``EndToEndIdentification`` and ``DomesticPaymentId`` (OB
  transactions have no end-to-end field of their own).
- **Overdrafts** are refused with 400 ``UK.OBIE.Rules.InsufficientFunds``. That code is not in the
  v3.1.11 list (which is an extensible, namespaced list; the spec has no insufficient-funds code);
  no payment is created and the consent stays ``Authorised``.
- **Faults** (``POST /_sandbox/faults``): for the next N requests to a path, ``delay``/``timeout``
  (before, or with ``after_processing`` after, the request is processed), ``error`` (a 5xx with the
  OB error body, or a 4xx given as ``status``), ``reject`` (the payment is created ``Rejected``
  with a reason code), or ``garbage`` (a 200 whose body is not JSON).
- Money is integer minor units inside; amounts on the wire are rendered at the currency's ISO 4217
  exponent with :func:`rails.money.format_minor`.
"""

from rails.sandbox.app import BankConfig, create_app

__all__ = ["BankConfig", "create_app"]
