"""The rail registry: typed [rails.NAME] sections with named errors, the old [bank] shape still
read, the instruction that crosses from node to rail, and the payee check done at open time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.app import build_rail
from node.config import ConfigError, init_data_dir, load_config
from rails import registry
from rails.iso20022 import SepaCreditTransferRail
from rails.nacha import AchCreditRail
from rails.ob_jws import generate_signing_key
from rails.openbanking import OpenBankingRail
from rails.port import Account, AccountScheme, TransferInstruction
from rails.registry import REGISTRY, check_payee_account
from rails.settings import (
    NachaSettings,
    OpenBankingSettings,
    RailConfigError,
    SepaSettings,
    parse_settings,
)

NACHA = {
    "url": "https://ach.odfi.example", "identification": "021000021:12345678",
    "immediate_destination": " 021000021", "immediate_destination_name": "JPMORGAN CHASE",
    "immediate_origin": "1470000001", "immediate_origin_name": "ACME CORPORATION",
    "company_id": "1470000001", "company_name": "ACME CORPORATION",
}
SEPA = {"url": "https://files.bank.example", "identification": "CH9300762011623852957",
        "street_name": "Bahnhofstrasse", "building_number": "1", "post_code": "8001",
        "town_name": "Zürich", "country": "CH"}


def node_dir(tmp_path: Path, bank: dict[str, object]) -> Path:
    directory = tmp_path / "node"
    init_data_dir(directory, name="acme", listen="127.0.0.1:7811", admin="127.0.0.1:7812",
                  bank=bank)
    return directory


def test_init_writes_bank_and_a_rails_section_that_load_reads_back(tmp_path: Path) -> None:
    directory = node_dir(tmp_path, {"rail": "nacha", "poll_interval_ms": 300, **NACHA})
    text = (directory / "config.toml").read_text()
    assert '[bank]\npoll_interval_ms = 300\nrail = "nacha"\n' in text
    assert '[rails.nacha]\nurl = "https://ach.odfi.example"' in text
    config = load_config(directory)
    assert (config.bank.rail, config.bank.poll_interval_ms) == ("nacha", 300)
    assert isinstance(config.bank.settings, NachaSettings)
    assert config.bank.settings.originator().company_id == "1470000001"
    assert config.own_account() is not None
    assert config.own_account().identification == "021000021:12345678"  # type: ignore[union-attr]
    rail = build_rail(config)
    assert isinstance(rail, AchCreditRail)
    assert (rail.account.agent, rail.account.identification) == ("021000021", "12345678")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"company_id": "12345"}, r"\[rails.nacha\] company_id: .*1 \+ EIN"),
        ({"immediate_origin": "0000000203 "}, r"\[rails.nacha\] immediate_origin"),
        ({"immediate_destination": "021000021"}, r"immediate_destination: .*routing number"),
        ({"immediate_destination_name": ""}, r"immediate_destination_name: is required"),
        ({"identification": "021000022:1"}, r"agent: .*check digit"),
        ({"company_name": 5}, r"\[rails.nacha\] company_name must be a str"),
        ({"compnay_id": "1470000001"}, r"unknown \[rails.nacha\] settings \['compnay_id'\]"),
        ({"company_id": None}, r"\[rails.nacha\] needs company_id"),
    ],
)
def test_a_bad_nacha_section_is_named_at_load(tmp_path: Path, change: dict[str, object],
                                              message: str) -> None:
    directory = node_dir(tmp_path, {"rail": "nacha", **NACHA})
    path = directory / "config.toml"
    lines = [line for line in path.read_text().splitlines()
             if not any(line.startswith(f"{k} =") for k in change)]
    at = lines.index("[rails.nacha]") + 1
    for key, value in change.items():
        if value is not None:
            lines.insert(at, f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=message):
        load_config(directory)


def test_init_refuses_what_load_would_refuse(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[rails.sepa\] identification: .*not a valid IBAN"):
        node_dir(tmp_path, {"rail": "sepa", **SEPA, "identification": "CH0000"})
    with pytest.raises(ConfigError, match="no rail 'swift'"):
        node_dir(tmp_path, {"rail": "swift", "url": "https://x"})


def test_an_old_bank_table_is_read_as_its_rails_section(tmp_path: Path) -> None:
    directory = node_dir(tmp_path, {})
    path = directory / "config.toml"
    old = ('[bank]\nrail = "sepa"\nurl = "https://files.bank.example"\nscheme = "IBAN"\n'
           'identification = "NL41MOCK0000000001"\nname = "ACME"\nclient_id = ""\n')
    path.write_text(path.read_text().replace("[bank]\n", old))
    config = load_config(directory)
    assert isinstance(config.bank.settings, SepaSettings)
    assert config.bank.identification == "NL41MOCK0000000001"
    assert isinstance(build_rail(config), SepaCreditTransferRail)
    path.write_text(path.read_text() + '\n[rails.sepa]\nurl = "https://x.example"\n'
                    'identification = "NL41MOCK0000000001"\n')
    with pytest.raises(ConfigError, match=r"move them into \[rails.sepa\]"):
        load_config(directory)


def test_no_identification_means_no_bank_account(tmp_path: Path) -> None:
    directory = node_dir(tmp_path, {})
    path = directory / "config.toml"
    path.write_text(path.read_text().replace(
        "[bank]\n", '[bank]\nrail = "sepa"\nurl = "http://127.0.0.1:9"\n'))
    config = load_config(directory)
    assert config.bank.settings is None
    assert config.own_account() is None
    assert build_rail(config) is None


def test_a_non_eea_sepa_account_needs_the_postal_address() -> None:
    with_address = parse_settings(SepaSettings, SEPA, "rails.sepa")
    assert isinstance(with_address, SepaSettings)
    address = with_address.postal_address()
    assert address is not None
    assert address.town_name == "Zürich"
    bare = {k: v for k, v in SEPA.items() if k in ("url", "identification")}
    with pytest.raises(RailConfigError, match="town_name: an account in a non-EEA SEPA"):
        parse_settings(SepaSettings, bare, "rails.sepa")
    with pytest.raises(RailConfigError, match="country: 'Schweiz'"):
        parse_settings(SepaSettings, {**SEPA, "country": "Schweiz"}, "rails.sepa")


def test_every_rail_is_registered_with_its_settings() -> None:
    assert set(REGISTRY) == {"openbanking", "sepa", "nacha"}
    for name, entry in REGISTRY.items():
        assert entry.name == name
        assert entry.settings.schemes


def test_a_transfer_instruction_reads_rows_written_before_it_existed() -> None:
    old_row = json.dumps({
        "idempotency_key": "k1", "purpose": "payout", "party": 1, "amount_minor": 11942,
        "currency": "USD", "reference": "ML 7F3A P1",
        "creditor": {"scheme": "US.ABA", "identification": "021000021:12345678901",
                     "name": "Carrier LLC"}}).encode()
    instruction = TransferInstruction.decode(old_row)
    assert instruction.creditor == Account("Carrier LLC", AccountScheme.US_ABA, "12345678901",
                                           "021000021")
    assert TransferInstruction.decode(instruction.encode()) == instruction
    debtor = Account("Escrow", AccountScheme.US_ABA, "1", "021000021")
    payment = instruction.payment(debtor)
    assert (payment.idempotency_key, payment.amount_minor, payment.debtor) == ("k1", 11942,
                                                                                debtor)
    for bad in (b"{}", b"[1]", b"not json",
                old_row.replace(b'"US.ABA"', b'"SWIFT"')):
        with pytest.raises(ValueError, match="not a transfer instruction"):
            TransferInstruction.decode(bad)


@pytest.mark.parametrize(
    ("rail", "account", "problem"),
    [
        ("sepa", Account("X", AccountScheme.IBAN, "DE89370400440532013000"), None),
        ("sepa", Account("X", AccountScheme.IBAN, "SE4550000000058398257466"), None),
        ("sepa", Account("X", AccountScheme.IBAN, "GB29NWBK60161331926819"), None),
        ("sepa", Account("X", AccountScheme.IBAN, "TR330006100519786457841326"),
         "TR is not a SEPA country"),
        ("sepa", Account("X", AccountScheme.IBAN, "BR1800360305000010009795493C1"),
         "BR is not a SEPA country"),
        ("sepa", Account("X", AccountScheme.IBAN, "DE89370400440532013001"), "not a valid IBAN"),
        ("sepa", Account("X", AccountScheme.SORT_CODE, "40000100000001"), "pays IBANs"),
        # a creditor BIC given is checked against the IBAN (ADR 0230)
        ("sepa", Account("X", AccountScheme.IBAN, "DE89370400440532013000", "COBADEFF"), None),
        ("sepa", Account("X", AccountScheme.IBAN, "CH9300762011623852957", "UBSWCHZH80A"),
         None),
        ("sepa", Account("X", AccountScheme.IBAN, "GB29NWBK60161331926819", "NWBKJESH"),
         None),  # a Jersey branch under a GB IBAN
        ("sepa", Account("X", AccountScheme.IBAN, "CH9300762011623852957", "UBSWCH"),
         "not a valid BIC"),
        ("sepa", Account("X", AccountScheme.IBAN, "CH9300762011623852957", "BNPAFRPPXXX"),
         "is of a bank in FR, but IBAN CH9300762011623852957 is held in CH"),
        ("sepa", Account("X", AccountScheme.IBAN, "DE89370400440532013000", "DEUTDEFFXXX"),
         "the bank registry has COBADEFFXXX"),
        ("sepa", Account("X", AccountScheme.IBAN, "GB29NWBK60161331926819", "BARCGB22"),
         "not the payee's bank"),
        ("nacha", Account("X", AccountScheme.US_ABA, "123", "021000021"), None),
        ("nacha", Account("X", AccountScheme.US_ABA, "123", "021000022"), "check digit"),
        ("nacha", Account("X", AccountScheme.IBAN, "DE89370400440532013000"), "US.ABA"),
        ("openbanking", Account("X", AccountScheme.SORT_CODE, "40000100000001"), None),
    ],
)
def test_check_payee_account(rail: str, account: Account, problem: str | None) -> None:
    finding = check_payee_account(rail, account)
    if problem is None:
        assert finding is None
    else:
        assert finding is not None
        assert finding.code == "AC01"
        assert problem in finding.message


def test_a_non_eea_payee_needs_the_payers_address_when_the_payer_is_known() -> None:
    gb = Account("Escrow Ltd", AccountScheme.IBAN, "GB29NWBK60161331926819")
    dutch = {"url": "https://files.bank.example", "identification": "NL41MOCK0000000001"}
    without = parse_settings(SepaSettings, dutch, "rails.sepa")
    with_address = parse_settings(SepaSettings, {**dutch, "town_name": "Amsterdam",
                                                 "country": "NL"}, "rails.sepa")
    assert check_payee_account("sepa", gb) is None  # the account itself is payable
    finding = check_payee_account("sepa", gb, without)
    assert finding is not None
    assert "payer's postal address" in finding.message
    assert check_payee_account("sepa", gb, with_address) is None
    de = Account("Escrow GmbH", AccountScheme.IBAN, "DE89370400440532013000")
    assert check_payee_account("sepa", de, without) is None  # inside the EEA: no address


def test_the_open_banking_redirect_uri_is_https_or_loopback(tmp_path: Path) -> None:
    ob = {"url": "https://ob.bank.example", "identification": "40000100000001",
          "account_id": "22289", "client_id": "tpp-1", "org_id": "0015800001F528CA73",
          "software_statement_id": "0b3f72fec387e8b38570a2",
          "key_file": str(tmp_path / "tpp.pem")}
    for good in ("", "https://payments.example.com/meterline/callback",
                 "http://127.0.0.1:8080/cb", "http://localhost/cb"):
        settings = parse_settings(OpenBankingSettings, {**ob, "redirect_uri": good},
                                  "rails.openbanking")
        assert isinstance(settings, OpenBankingSettings)
        assert settings.redirect_uri == good
    for bad in ("http://payments.example.com/cb", "https://x.example/cb?state=1",
                "https://x.example/cb#f", "ftp://x.example/cb", "https://"):
        with pytest.raises(RailConfigError, match=r"\[rails.openbanking\] redirect_uri"):
            parse_settings(OpenBankingSettings, {**ob, "redirect_uri": bad},
                           "rails.openbanking")
    generate_signing_key(tmp_path / "tpp.pem")
    settings = parse_settings(OpenBankingSettings, {
        **ob, "redirect_uri": "https://payments.example.com/cb"}, "rails.openbanking")
    rail = registry.build_rail("openbanking", settings, registry.RailContext(tmp_path, "ACME"))
    assert isinstance(rail, OpenBankingRail)
    assert rail._config.redirect_uri == "https://payments.example.com/cb"


@pytest.mark.parametrize("bits", [0o644, 0o640, 0o604])
def test_an_open_banking_key_others_can_read_is_refused(tmp_path: Path, bits: int) -> None:
    """The TPP key signs every payment and every token request: like the node key, the admin
    token and the TLS key, a file group or others can read is refused at start."""
    key = tmp_path / "tpp.pem"
    generate_signing_key(key)
    directory = node_dir(tmp_path, {
        "rail": "openbanking", "url": "https://ob.bank.example",
        "identification": "40000100000001", "account_id": "22289", "client_id": "tpp-1",
        "org_id": "0015800001F528CA73", "software_statement_id": "0b3f72fec387e8b38570a2",
        "key_file": str(key)})
    config = load_config(directory)
    assert isinstance(build_rail(config), OpenBankingRail)  # 0600: used
    key.chmod(bits)
    with pytest.raises(ConfigError, match="chmod 600"):
        build_rail(config)
