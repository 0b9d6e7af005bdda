"""Money at a scale, ISO 4217 exponents, the payout rule (DESIGN §3) and tariffs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import channel as ch
from protocol.errors import ErrorCode, LocalProtocolError
from protocol.money import (
    Money,
    currency_exponent,
    format_decimal,
    format_money,
    from_minor_units,
    parse_decimal,
    parse_money,
    parse_rail_money,
    to_minor_units,
)
from protocol.payout import Payouts, cumulative_shares
from protocol.simulation import Simulation
from protocol.tariff import (
    TariffLine,
    TariffTier,
    check_tariff,
    parse_quantity,
    parse_tariff_line,
    tariff_amount,
)
from protocol.types import Amount, MinorUnits, Quantity

from .conftest import KM, KM_GRADUATED, MSG

PROPERTY = settings(max_examples=200, deadline=None)

# -- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "scale", "expected"),
    [
        ("5000.00 EUR", 6, Money(Amount(5_000_000_000), "EUR", 6)),
        ("5000 EUR", 6, Money(Amount(5_000_000_000), "EUR", 6)),
        ("0.000001 EUR", 6, Money(Amount(1), "EUR", 6)),
        ("12.5 eur", 6, Money(Amount(12_500_000), "EUR", 6)),
        ("  7.10 EUR  ", 2, Money(Amount(710), "EUR", 2)),
        ("1.500 EUR", 2, Money(Amount(150), "EUR", 2)),  # trailing zeros are exact
        ("1000 JPY", 0, Money(Amount(1000), "JPY", 0)),
        ("1.234 KWD", 3, Money(Amount(1234), "KWD", 3)),
        ("9223372036854.775807 EUR", 6, Money(Amount(2**63 - 1), "EUR", 6)),
        ("0.001 EUR", 6, Money(Amount(1000), "EUR", 6)),  # below the cent: a channel amount
    ],
)
def test_parse_money(text: str, scale: int, expected: Money) -> None:
    assert parse_money(text, scale) == expected
    assert isinstance(parse_money(text, scale).amount, int)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("1e3 EUR", ErrorCode.INVALID_AMOUNT),
        ("1E3 EUR", ErrorCode.INVALID_AMOUNT),
        ("inf EUR", ErrorCode.INVALID_AMOUNT),
        ("nan EUR", ErrorCode.INVALID_AMOUNT),
        ("-5 EUR", ErrorCode.INVALID_AMOUNT),
        ("+5 EUR", ErrorCode.INVALID_AMOUNT),
        ("1,000.00 EUR", ErrorCode.INVALID_AMOUNT),
        ("1_000 EUR", ErrorCode.INVALID_AMOUNT),
        (".5 EUR", ErrorCode.INVALID_AMOUNT),
        ("5. EUR", ErrorCode.INVALID_AMOUNT),
        ("0x10 EUR", ErrorCode.INVALID_AMOUNT),
        ("0.0000001 EUR", ErrorCode.INVALID_AMOUNT),  # 7 decimals at scale 6
        ("\u0661\u0662 EUR", ErrorCode.INVALID_AMOUNT),  # Arabic-Indic digits
        ("\uff11\uff12 EUR", ErrorCode.INVALID_AMOUNT),  # full-width digits
        ("5000.00", ErrorCode.INVALID_AMOUNT),
        ("EUR 5000.00", ErrorCode.INVALID_AMOUNT),
        ("5000.00 EURO", ErrorCode.INVALID_AMOUNT),
        ("", ErrorCode.INVALID_AMOUNT),
        ("99999999999999999999.999999 EUR", ErrorCode.INVALID_AMOUNT),  # above 2^63 - 1
        ("9223372036854.775808 EUR", ErrorCode.INVALID_AMOUNT),
        ("1" * 65 + " EUR", ErrorCode.INVALID_AMOUNT),
        ("5 ZZZ", ErrorCode.UNKNOWN_CURRENCY),
        ("5 XAU", ErrorCode.UNKNOWN_CURRENCY),
        ("5 XXX", ErrorCode.UNKNOWN_CURRENCY),
    ],
)
def test_parse_money_refuses(text: str, code: ErrorCode) -> None:
    with pytest.raises(LocalProtocolError) as info:
        parse_money(text)
    assert info.value.code is code


def test_parse_money_refuses_a_scale_below_the_exponent() -> None:
    with pytest.raises(LocalProtocolError) as info:
        parse_money("1.234 KWD", 2)
    assert info.value.code is ErrorCode.INVALID_TERMS
    with pytest.raises(LocalProtocolError) as info:
        parse_money("1 EUR", 13)
    assert info.value.code is ErrorCode.INVALID_TERMS


# -- the one grammar (specs/0001 §2.1): every refusal says what to write instead --------------


@pytest.mark.parametrize(
    ("text", "scale", "says"),
    [
        ("1,5", 2, "write 1.5"),
        ("0,0123", 6, "write 0.0123"),
        ("1e3", 2, "1e3 is 1000"),
        ("2.5E-1", 6, "write the number out in full"),
        ("+1", 2, "write 1 without the +"),
        ("-1", 2, "never below 0"),
        (".5", 2, "write 0.5"),
        ("5.", 2, "write 5"),
        ("1 000", 2, "write 1000"),
        ("1,000.00", 2, "write 1000.00"),
        ("1_000", 2, "write 1000"),
        ("18446744073709551616", 0, "above the largest amount"),
        ("9223372036854775808", 0, "9223372036854775807"),
        ("3.205", 2, "round it yourself (e.g. 3.20)"),
        ("0.001", 2, "has 3 decimal places"),
        ("0.5", 0, "has 1 decimal place,"),
        ("", 2, "write a number such as 12.50"),
        ("\u0661\u0662", 2, "ASCII digits"),
    ],
)
def test_grammar_refusals_say_what_to_write(text: str, scale: int, says: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        parse_decimal(text, scale)
    assert info.value.code is ErrorCode.INVALID_AMOUNT
    assert says in info.value.message


@pytest.mark.parametrize(
    ("text", "scale", "value"),
    [("12.50", 1, 125), ("012.50", 1, 125), ("1.230000", 2, 123), ("  7  ", 0, 7),
     ("9223372036854775807", 0, 2**63 - 1), ("0.000000000001", 12, 1)],
)
def test_grammar_accepts_insignificant_zeros(text: str, scale: int, value: int) -> None:
    """Leading zeros and trailing zeros after the point carry no value, so they do not count
    against the scale: 12.50 at scale 1 is exactly 12.5."""
    assert parse_decimal(text, scale) == value


def test_currency_codes_in_any_case_are_the_upper_case_code() -> None:
    assert parse_money("12.5 eur", 6) == parse_money("12.5 EUR", 6) == parse_money("12.5 Eur", 6)
    with pytest.raises(LocalProtocolError) as info:
        parse_money("EUR 12.5", 6)
    assert "write the number first: 12.5 EUR" in info.value.message


@pytest.mark.parametrize(
    ("text", "minor", "currency"),
    [("5000.00 EUR", 500_000, "EUR"), ("3.200 EUR", 320, "EUR"), ("1500 jpy", 1500, "JPY"),
     ("12.345 KWD", 12_345, "KWD"), ("0.001 BHD", 1, "BHD")],
)
def test_rail_money_is_whole_minor_units(text: str, minor: int, currency: str) -> None:
    money = parse_rail_money(text)
    assert (money.amount, money.currency, money.scale) == (minor, currency,
                                                            currency_exponent(currency))


def test_rail_money_of_any_length_is_a_typed_refusal() -> None:
    for text in ("1" * 5000 + " EUR", "0." + "1" * 5000 + " EUR"):
        with pytest.raises(LocalProtocolError) as info:
            parse_rail_money(text)
        assert info.value.code is ErrorCode.INVALID_AMOUNT


@pytest.mark.parametrize(
    ("text", "says"),
    [("0.001 EUR", "write 0.00 EUR or 0.01 EUR"), ("3.205 EUR", "write 3.20 EUR or 3.21 EUR"),
     ("0.5 JPY", "write 0 JPY or 1 JPY"), ("1.2345 KWD", "write 1.234 KWD or 1.235 KWD")],
)
def test_rail_money_below_the_minor_unit_is_refused(text: str, says: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        parse_rail_money(text)
    assert info.value.code is ErrorCode.INVALID_AMOUNT
    assert says in info.value.message


def test_too_many_decimals() -> None:
    assert parse_decimal("0.12", 2) == 12
    with pytest.raises(LocalProtocolError) as info:
        parse_decimal("0.123", 2)
    assert info.value.code is ErrorCode.INVALID_AMOUNT
    assert parse_decimal("0.1230", 3) == 123
    with pytest.raises(LocalProtocolError) as info:
        parse_decimal(1.5, 2)  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.INVALID_AMOUNT


@pytest.mark.parametrize(
    ("code", "exponent"), [("EUR", 2), ("USD", 2), ("GBP", 2), ("JPY", 0), ("KWD", 3)]
)
def test_exponents(code: str, exponent: int) -> None:
    assert currency_exponent(code) == exponent


@pytest.mark.parametrize("code", ["XAU", "XAG", "XXX", "ZZZ", "eur", "EU", "EURO", ""])
def test_unknown_currencies(code: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        currency_exponent(code)
    assert info.value.code is ErrorCode.UNKNOWN_CURRENCY


def test_remembered_exponents_are_only_real_currencies_and_odd_input_stays_typed() -> None:
    from protocol import money

    for _ in range(2):  # asked twice: the second answer comes from what was remembered
        assert currency_exponent("JPY") == 0
        for code in ("XAU", "ZZZ", "eur"):
            with pytest.raises(LocalProtocolError):
                currency_exponent(code)
    assert money._EXPONENTS.get("JPY") == 0
    assert not {"XAU", "ZZZ", "eur"} & money._EXPONENTS.keys()  # a peer cannot grow it
    for odd in ([], None, 3, b"EUR"):  # not even hashable, or not a string
        with pytest.raises(LocalProtocolError) as info:
            currency_exponent(odd)  # type: ignore[arg-type]
        assert info.value.code is ErrorCode.UNKNOWN_CURRENCY


def test_rounding_to_minor_units() -> None:
    assert to_minor_units(Amount(12_345_678), 6, 2) == 1234
    assert to_minor_units(Amount(12_349_999), 6, 2) == 1234  # always down
    assert to_minor_units(Amount(1_999_999), 6, 0) == 1
    assert to_minor_units(Amount(123_456), 6, 3) == 123
    assert to_minor_units(Amount(0), 6, 2) == 0
    assert from_minor_units(1234, 6, 2) == 12_340_000
    with pytest.raises(LocalProtocolError) as info:
        to_minor_units(Amount(-1), 6, 2)
    assert info.value.code is ErrorCode.INVALID_AMOUNT


def test_formatting() -> None:
    assert format_decimal(153_750, 6) == "0.15375"
    assert format_decimal(5_000_000_000, 6, min_places=2) == "5000.00"
    assert format_decimal(-1, 6) == "-0.000001"
    assert format_decimal(12, 0) == "12"
    assert format_money(12_349_999, "EUR", 6) == "12.34 EUR"
    assert format_money(-12_349_999, "EUR", 6) == "-12.34 EUR"
    assert format_money(12_349_999, "EUR", 6, precise=True) == "12.349999 EUR"
    assert format_money(1_000_000, "JPY", 6) == "1 JPY"
    assert str(parse_money("5000.00 EUR")) == "5000.00 EUR"


@PROPERTY
@given(st.integers(0, 2**63 - 1), st.integers(0, 12))  # every amount a channel can carry
def test_decimal_round_trip(value: int, scale: int) -> None:
    assert parse_decimal(format_decimal(value, scale), scale) == value


@PROPERTY
@given(st.integers(2**63, 2**70), st.integers(0, 12))
def test_decimal_above_the_bound_is_refused(value: int, scale: int) -> None:
    with pytest.raises(LocalProtocolError) as info:
        parse_decimal(format_decimal(value, scale), scale)
    assert "above the largest amount" in info.value.message


# -- the payout rule --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deposits", "sent", "exponent", "expected"),
    [
        # nothing moved: each gets its deposit back
        ((100, 50), (0, 0), 2, Payouts(MinorUnits(100), MinorUnits(50), Amount(0))),
        # opener paid 12.345678 EUR: the peer (payee) gets 12.34, the opener the rest
        (
            (10_000, 0),
            (12_345_678, 0),
            2,
            Payouts(MinorUnits(8766), MinorUnits(1234), Amount(5678)),
        ),
        # the peer paid more: the opener is the payee and is rounded down
        (
            (5_000, 5_000),
            (1_000_000, 3_500_001),
            2,
            Payouts(MinorUnits(5250), MinorUnits(4750), Amount(1)),
        ),
        # exactly one cent net: no residual
        ((100, 100), (10_000, 0), 2, Payouts(MinorUnits(99), MinorUnits(101), Amount(0))),
        # JPY has no minor unit: 1.999999 yen pays 1 yen
        ((1000, 0), (1_999_999, 0), 0, Payouts(MinorUnits(999), MinorUnits(1), Amount(999_999))),
        # KWD has three decimals: 0.123456 KWD pays 123 fils
        ((1000, 0), (123_456, 0), 3, Payouts(MinorUnits(877), MinorUnits(123), Amount(456))),
        # a side cannot be owed less than nothing
        ((100, 0), (3_000_000, 0), 2, Payouts(MinorUnits(0), MinorUnits(100), Amount(0))),
        # nor more than the escrow holds
        ((100, 0), (0, 5_000_000), 2, Payouts(MinorUnits(100), MinorUnits(0), Amount(0))),
        # everything to the peer, rounding included
        ((100, 0), (1_000_000, 0), 2, Payouts(MinorUnits(0), MinorUnits(100), Amount(0))),
    ],
)
def test_compute_payouts_table(
    deposits: tuple[int, int], sent: tuple[int, int], exponent: int, expected: Payouts
) -> None:
    payouts = cumulative_shares(
        opener_deposit=MinorUnits(deposits[0]),
        peer_deposit=MinorUnits(deposits[1]),
        opener_sent=Amount(sent[0]),
        peer_sent=Amount(sent[1]),
        scale=6,
        exponent=exponent,
    )
    assert payouts == expected
    assert payouts.opener + payouts.peer == sum(deposits)


@PROPERTY
@given(
    st.integers(0, 10**9),
    st.integers(0, 10**9),
    st.integers(0, 10**16),
    st.integers(0, 10**16),
    st.sampled_from([0, 2, 3]),
)
def test_payout_rule_properties(dep0: int, dep1: int, sent0: int, sent1: int, exp: int) -> None:
    f = 10 ** (6 - exp)
    payouts = cumulative_shares(
        opener_deposit=MinorUnits(dep0),
        peer_deposit=MinorUnits(dep1),
        opener_sent=Amount(sent0),
        peer_sent=Amount(sent1),
        scale=6,
        exponent=exp,
    )
    assert payouts.opener + payouts.peer == dep0 + dep1
    assert payouts.opener >= 0
    assert payouts.peer >= 0
    assert 0 <= payouts.residual < f
    owed0 = min(max(0, dep0 * f - sent0 + sent1), (dep0 + dep1) * f)
    if owed0 > dep0 * f:  # the opener is the payee: rounded down
        assert payouts.opener == owed0 // f
    else:  # the peer is the payee (or nobody is): the peer rounded down
        assert payouts.peer == ((dep0 + dep1) * f - owed0) // f
    # paying more never raises your payout
    more = cumulative_shares(
        opener_deposit=MinorUnits(dep0),
        peer_deposit=MinorUnits(dep1),
        opener_sent=Amount(sent0 + f),
        peer_sent=Amount(sent1),
        scale=6,
        exponent=exp,
    )
    assert more.opener <= payouts.opener


# -- tariffs ----------------------------------------------------------------------------------


def test_flat_tariff() -> None:
    assert KM.amount(0) == 0
    assert KM.amount(1_000) == 12_300  # 1 km
    assert KM.amount(12_500) == 153_750  # 12.5 km
    assert KM.amount(1) == 12  # one metre: 12.3 rounded down
    assert KM.amount(999) == 12_287  # 12287.7 rounded down


def test_graduated_tiers() -> None:
    assert KM_GRADUATED.amount(1_000_000) == 15_000_000  # 1000 km at 0.015
    assert KM_GRADUATED.amount(1_500_000) == 15_000_000 + 6_150_000
    assert KM_GRADUATED.amount(999_999) == 14_999_985
    assert KM_GRADUATED.amount(1_000_001) == 15_000_012  # 15_000_000 + 12.3
    three = TariffLine(
        "hour",
        0,
        (
            TariffTier(Quantity(10), Amount(100)),
            TariffTier(Quantity(20), Amount(50)),
            TariffTier(None, Amount(10)),
        ),
    )
    check_tariff([three])
    assert [three.amount(q) for q in (0, 5, 10, 15, 20, 25)] == [0, 500, 1000, 1250, 1500, 1550]


def test_multi_line_amount() -> None:
    assert tariff_amount((KM_GRADUATED, MSG), (Quantity(1_500), Quantity(3))) == 22_521
    with pytest.raises(LocalProtocolError) as info:
        tariff_amount((KM_GRADUATED, MSG), (Quantity(1),))
    assert info.value.code is ErrorCode.TARIFF_MISMATCH


def test_parse_tariff_line() -> None:
    assert parse_tariff_line("km=0.0123", scale=6) == KM
    assert parse_tariff_line("km=0.015:1000,0.0123", scale=6) == KM_GRADUATED
    assert parse_tariff_line("message=0.000007", scale=6, quantity_scale=0) == MSG
    line = parse_tariff_line("container-hour=1.5", scale=6)
    assert line.amount(parse_quantity("12.5", line)) == 18_750_000
    assert parse_quantity("12.5", KM) == 12_500


@pytest.mark.parametrize(
    "text",
    [
        "km",
        "km:0.01",
        "=0.01",
        "KM=0.01",
        "1km=0.01",
        "km=",
        "km=abc",
        "km=1e-3",
        "km=-0.01",
        "km=0.0000001",  # finer than the amount scale
        "km=0.01:1000",  # the last tier must be unbounded
        "km=0.01,0.02",  # only the last tier is unbounded
        "km=0.02:1000,0.01:500,0.005",  # bounds must rise
        "km=0.02:0,0.01",  # a first tier of nothing
        "km=0.02:1.0001,0.01",  # bound finer than the quantity scale
        "km=" + ",".join([f"0.01:{i + 1}" for i in range(8)]) + ",0.01",  # 9 tiers
    ],
)
def test_parse_tariff_line_errors(text: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        parse_tariff_line(text, scale=6)
    assert info.value.code is ErrorCode.INVALID_TARIFF


def test_check_tariff_errors() -> None:
    for lines in ([], [KM, KM], [TariffLine("km", 10, KM.tiers)], [TariffLine("Km", 3, KM.tiers)]):
        with pytest.raises(LocalProtocolError) as info:
            check_tariff(lines)
        assert info.value.code is ErrorCode.INVALID_TARIFF
    with pytest.raises(LocalProtocolError) as info:
        parse_quantity("1.0001", KM)
    assert info.value.code is ErrorCode.INVALID_AMOUNT


@PROPERTY
@given(
    st.integers(0, 10**12),
    st.integers(0, 10**12),
)
def test_tariff_is_monotonic_and_exact(a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    for line in (KM, KM_GRADUATED, MSG):
        assert line.amount(lo) <= line.amount(hi)
    # flat price on cumulative totals: exactly floor(price × q / 10^scale)
    assert KM.amount(hi) == 12_300 * hi // 1_000


# -- no drift ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 333])
def test_no_drift_one_at_a_time_equals_all_at_once(n: int) -> None:
    """One metre at a time costs 12.3 → the proofs carry cumulative amounts, never rounded steps."""

    def run(steps: list[int]) -> int:
        s = Simulation.create(tariff=(KM,), opener_deposit=10_000, peer_deposit=0)
        s.open()
        for q in steps:
            s.pay(0, (q,), acknowledge=False)
        assert s.states[1].received.amount == s.states[0].sent.amount
        return s.states[1].received.amount

    one_by_one = run([1] * n)
    at_once = run([n])
    assert one_by_one == at_once == 12_300 * n // 1_000
    if n >= 7:
        assert one_by_one != n * KM.amount(1)  # per-step rounding would have drifted


@PROPERTY
@given(st.lists(st.integers(1, 5_000_000), min_size=1, max_size=40))
def test_no_drift_tariff_increments(steps: list[int]) -> None:
    total = 0
    charged = 0
    for q in steps:
        before = KM_GRADUATED.amount(total)
        total += q
        charged += KM_GRADUATED.amount(total) - before
    assert charged == KM_GRADUATED.amount(total)


def test_pay_refuses_bad_quantities(sim: Simulation) -> None:
    before = sim.states[0]
    for quantities, direct, code in [
        ((Quantity(-1),), Amount(0), ErrorCode.INVALID_AMOUNT),
        ((Quantity(0),), Amount(-1), ErrorCode.INVALID_AMOUNT),
        ((Quantity(0),), Amount(0), ErrorCode.INVALID_AMOUNT),
        ((Quantity(1), Quantity(1)), Amount(0), ErrorCode.TARIFF_MISMATCH),
    ]:
        with pytest.raises(LocalProtocolError) as info:
            ch.step(before, ch.ActionPay(sim.opener, quantities, direct), now_ms=sim.tick())
        assert info.value.code is code
        assert sim.states[0] is before


# -- the statement's allocation (ADR 0152) ---------------------------------------------------


def _toward_zero(total: int, unit: int) -> int:
    return abs(total) // unit * (1 if total >= 0 else -1)


@pytest.mark.parametrize(
    ("values", "unit", "expected"),
    [
        ([], 10_000, []),
        ([153_750, 1_800_000_000, 3_200_000], 10_000, [15, 180_000, 320]),
        # three thirds of a cent each: floors 0, the one cent the net has goes to the first
        ([3_333, 3_333, 3_334], 10_000, [0, 0, 1]),
        ([5_000, 5_000], 10_000, [1, 0]),  # ties go to the earlier line
        ([-5, -5], 10, [0, -1]),  # the net -1 unit, rounded towards zero from -10/10
        ([-15, 4], 10, [-1, 0]),  # net -11 → -1
        ([1_999_999], 1_000_000, [1]),  # JPY at scale 6: rounded towards zero
        ([123_456, -23_455], 1_000, [123, -23]),  # BHD at scale 6: net 100.001 → 100
    ],
)
def test_allocate(values: list[int], unit: int, expected: list[int]) -> None:
    from protocol.money import allocate

    assert allocate(values, unit) == expected
    assert sum(expected) == _toward_zero(sum(values), unit)


@PROPERTY
@given(st.lists(st.integers(-(10**15), 10**15), max_size=40),
       st.sampled_from([1, 10, 100, 1_000, 10_000, 1_000_000]))
def test_allocation_adds_up_to_the_net_and_stays_within_a_unit(values: list[int],
                                                               unit: int) -> None:
    from protocol.money import allocate

    shares = allocate(values, unit)
    assert sum(shares) == _toward_zero(sum(values), unit)
    for value, share in zip(values, shares, strict=True):
        assert abs(value - share * unit) < unit


@PROPERTY
@given(st.integers(0, 10**9), st.integers(0, 10**9), st.sampled_from([(6, 0), (6, 2), (6, 3)]))
def test_allocated_net_is_what_the_payout_rule_moves(sent: int, received: int,
                                                     scales: tuple[int, int]) -> None:
    """The rounded net of a statement equals the payee's payout less its deposit: the money
    that moves between the two banks (0004 §4)."""
    from protocol.money import allocate

    scale, exponent = scales
    unit = 10 ** (scale - exponent)
    deposit = 10**6  # each side, minor units
    payouts = cumulative_shares(
        opener_deposit=MinorUnits(deposit), peer_deposit=MinorUnits(deposit),
        opener_sent=Amount(sent), peer_sent=Amount(received), scale=scale, exponent=exponent)
    net = sum(allocate([-sent, received], unit))  # as the opener sees it
    assert net == payouts.opener - deposit
