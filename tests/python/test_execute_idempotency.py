"""Idempotent commands (spec 2 "Aggregates", execute's `id=`): the events decided for a
command id get ids derived from it, so a retry of the command -- after a lost reply, after
other commits, after reopening, from another process at the same moment -- returns the first
result and writes nothing; the same command id for another command is a DuplicateEvent."""

import json
import textwrap
import uuid

import pytest

import cairn
from conftest import dump, nothing_written, run_together

ACCOUNT = """\
return {
  init = function() return { balance = 0 } end,
  apply = {
    Deposited = function(s, e) s.balance = s.balance + e.data.amount end,
    Withdrawn = function(s, e) s.balance = s.balance - e.data.amount end,
  },
  decide = {
    Deposit = function(s, cmd)
      return { { type = "Deposited", data = { amount = cmd.data.amount } } }
    end,
    Withdraw = function(s, cmd)
      if s.balance < cmd.data.amount then reject("insufficient funds") end
      return { { type = "Withdrawn", data = { amount = cmd.data.amount } } }
    end,
    Split = function(s, cmd)
      local out = {}
      for i = 1, cmd.data.n do out[i] = { type = "Deposited", data = { amount = i } } end
      return out
    end,
    TopUpIfEmpty = function(s, cmd)
      if s.balance > 0 then return {} end
      return { { type = "Deposited", data = { amount = cmd.data.amount } } }
    end,
  },
}
"""

# Another aggregate that can decide for the same streams (aggregate= names it).
AUDIT = """\
return {
  decide = {
    Deposit = function(s, cmd) return { { type = "Audited", data = cmd.data } } end,
  },
}
"""


@pytest.fixture
def bank(store):
    store.define_aggregate("account", ACCOUNT)
    store.define_aggregate("audit", AUDIT)
    store.execute("account-1", "Deposit", {"amount": 100})
    return store


def intervening(store, n):
    """n commits of every kind between a command and its retry: the same stream's state moves
    on (a deposit and its withdrawal keep the balance at 0), other streams grow, single
    appends fill the index tail and batches flush it."""
    for k in range(n):
        kind = k % 4
        if kind == 0:
            store.execute("account-1", "Deposit", {"amount": 5})
        elif kind == 1:
            store.execute("account-1", "Withdraw", {"amount": 5})
        elif kind == 2:
            store.append("other-1", [cairn.Event("Noted", {"k": k})])
        else:
            store.append("other-2", [cairn.Event("Noted", {"k": k}), cairn.Event("Noted")])


def events_of(store, r):
    return [store.get(p) for p in range(r.first_position, r.position + 1)]


# ---------------------------------------------------------------------------------------
# A retry returns the first result and writes nothing.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("between", [0, 1, 200])
def test_a_retry_returns_the_first_result_and_writes_nothing(bank, between):
    cid = uuid.uuid4()
    first = bank.execute("account-1", "Withdraw", {"amount": 100}, id=cid)
    assert (first.version, first.position, first.first_position) == (1, 2, 2)
    intervening(bank, between)
    before = dump(bank)
    # run again, decide would reject (the balance is below 100); the retry does not run it
    assert bank.load("account-1").state["balance"] < 100
    again = bank.execute("account-1", "Withdraw", {"amount": 100}, id=cid)
    assert again == first
    assert dump(bank) == before


@pytest.mark.parametrize("between", [0, 1, 200])
def test_a_retry_of_a_command_of_many_events_returns_all_of_them(bank, between):
    cid = uuid.uuid4()
    first = bank.execute("account-1", "Split", {"n": 3}, id=cid)
    assert first.position - first.first_position == 2
    intervening(bank, between)
    head = bank.head()
    assert bank.execute("account-1", "Split", {"n": 3}, id=str(cid)) == first
    assert bank.head() == head
    assert [e.data for e in events_of(bank, first)] == [{"amount": i} for i in (1, 2, 3)]


def test_a_retry_checks_no_expected_version(bank):
    cid = uuid.uuid4()
    first = bank.execute("account-1", "Deposit", {"amount": 1}, id=cid, expected_version=0)
    bank.execute("account-1", "Deposit", {"amount": 1})
    # version 0 no longer holds: as for an append retried with the same ids, the first result
    assert bank.execute("account-1", "Deposit", {"amount": 1}, id=cid, expected_version=0) == first
    assert bank.stream_version("account-1") == 2


def test_the_command_id_as_a_str_and_as_a_uuid_is_one_command(bank):
    cid = uuid.uuid4()
    first = bank.execute("account-1", "Deposit", {"amount": 1}, id=str(cid).upper())
    assert bank.execute("account-1", "Deposit", {"amount": 1}, id=cid) == first
    assert bank.execute("account-1", "Deposit", {"amount": 1}, id=cid.hex) == first
    assert bank.stream_version("account-1") == 1


def test_a_retry_whose_data_dict_has_its_keys_in_another_order_is_a_retry(bank):
    cid = uuid.uuid4()
    one = {"amount": 1, "note": "x", "n": [1, {"b": 1, "a": 2}]}
    other = {"n": [1, {"a": 2, "b": 1}], "note": "x", "amount": 1}
    first = bank.execute("account-1", "Deposit", one, id=cid)
    again = bank.execute("account-1", "Deposit", other, id=cid)
    assert again == first
    assert bank.stream_version("account-1") == 1


def test_a_retry_with_other_metadata_is_a_retry(bank):
    cid = uuid.uuid4()
    first = bank.execute("account-1", "Deposit", {"amount": 1}, id=cid,
                         metadata={"correlation_id": "c-1", "attempt": 1})
    again = bank.execute("account-1", "Deposit", {"amount": 1}, id=cid,
                         metadata={"correlation_id": "c-1", "attempt": 2})
    assert again == first
    assert bank.get(first.position).metadata == {"correlation_id": "c-1", "attempt": 1}


def test_a_retry_after_reopening_returns_the_first_result(store_path):
    cid = uuid.uuid4()
    with cairn.open(store_path) as s:
        s.define_aggregate("account", ACCOUNT)
        first = s.execute("account-1", "Deposit", {"amount": 7}, id=cid)
    with cairn.open(store_path) as s:
        head = s.head()
        assert s.execute("account-1", "Deposit", {"amount": 7}, id=cid) == first
        assert s.head() == head
        intervening(s, 70)  # the index tail flushed: the ids are in the id index now
    with cairn.open(store_path) as s:
        head = s.head()
        assert s.execute("account-1", "Deposit", {"amount": 7}, id=cid) == first
        assert s.head() == head
        s.verify()


def test_the_events_of_a_command_get_ids_derived_from_its_id(tmp_path):
    cid = uuid.uuid4()
    ids = []
    for name in ("a", "b"):  # two stores: the same command, the same event ids
        with cairn.open(tmp_path / name, durability="none") as s:
            s.define_aggregate("account", ACCOUNT)
            r = s.execute("account-1", "Split", {"n": 3}, id=cid)
            ids.append([e.id for e in events_of(s, r)])
            other = s.execute("account-1", "Split", {"n": 3}, id=uuid.uuid4())
            plain = s.execute("account-1", "Split", {"n": 3})
            assert not {e.id for e in events_of(s, other) + events_of(s, plain)} & set(ids[-1])
    assert ids[0] == ids[1]
    assert len(set(ids[0])) == 3 and cid not in ids[0]
    assert all(i.version == 8 and i.variant == uuid.RFC_4122 for i in ids[0])


def test_the_ids_of_a_commands_events_are_the_same_in_every_version(store):
    # a retry sent to a newer cairn must find what an older one wrote: the derivation is
    # part of the format (docs/FORMAT.md "Ids")
    store.define_aggregate("account", ACCOUNT)
    r = store.execute("account-1", "Split", {"n": 2}, id="7d0a3c1e-2b4f-4e6a-9c8d-5f1e2a3b4c5d")
    assert [str(e.id) for e in events_of(store, r)] == [
        "9f171138-60b2-89be-8891-030f055010d0", "9f171138-60b2-89be-8891-030f055010d1"]


def test_two_commands_with_their_own_ids_are_both_written(bank):
    a = bank.execute("account-1", "Deposit", {"amount": 1}, id=uuid.uuid4())
    b = bank.execute("account-1", "Deposit", {"amount": 1}, id=uuid.uuid4())
    assert (a.version, b.version) == (1, 2)


# ---------------------------------------------------------------------------------------
# A command that wrote nothing left nothing to be idempotent about.
# ---------------------------------------------------------------------------------------


def test_a_command_that_decided_no_events_decides_again_on_retry(bank):
    cid = uuid.uuid4()
    first = bank.execute("account-1", "TopUpIfEmpty", {"amount": 50}, id=cid)
    assert (first.version, first.position, first.first_position) == (0, None, None)
    assert bank.execute("account-1", "TopUpIfEmpty", {"amount": 50}, id=cid) == first
    bank.execute("account-1", "Withdraw", {"amount": 100})
    # the first call wrote nothing: the retry is a first call, on the state as it is now
    again = bank.execute("account-1", "TopUpIfEmpty", {"amount": 50}, id=cid)
    assert (again.version, again.position) == (2, bank.head())
    assert bank.execute("account-1", "TopUpIfEmpty", {"amount": 50}, id=cid) == again
    assert bank.load("account-1").state["balance"] == 50


def test_a_rejected_command_can_be_retried(bank):
    cid = uuid.uuid4()
    with nothing_written(bank), pytest.raises(cairn.CommandRejected):
        bank.execute("account-1", "Withdraw", {"amount": 500}, id=cid)
    bank.execute("account-1", "Deposit", {"amount": 400})
    r = bank.execute("account-1", "Withdraw", {"amount": 500}, id=cid)
    assert bank.execute("account-1", "Withdraw", {"amount": 500}, id=cid) == r
    assert bank.load("account-1").state["balance"] == 0


# ---------------------------------------------------------------------------------------
# One command id, another command: refused, nothing written.
# ---------------------------------------------------------------------------------------

OTHER_COMMANDS = {
    "another stream": (("account-2", "Deposit", {"amount": 1}), {}),
    "another command": (("account-1", "Withdraw", {"amount": 1}), {}),
    "other data": (("account-1", "Deposit", {"amount": 2}), {}),
    "data of another type": (("account-1", "Deposit", {"amount": 1.0}), {}),
    "no data": (("account-1", "Deposit"), {}),
    "another aggregate": (("account-1", "Deposit", {"amount": 1}), {"aggregate": "audit"}),
}


@pytest.mark.parametrize("other", sorted(OTHER_COMMANDS))
def test_a_command_id_used_for_another_command_is_a_duplicate(bank, other):
    cid = uuid.uuid4()
    first = bank.execute("account-1", "Deposit", {"amount": 1}, id=cid)
    args, kw = OTHER_COMMANDS[other]
    with nothing_written(bank), pytest.raises(cairn.DuplicateEvent) as ei:
        bank.execute(*args, id=cid, **kw)
    assert str(cid) in str(ei.value) and "nothing was written" in str(ei.value)
    assert ei.value.position == first.position
    if other == "another stream":
        assert "for stream account-1" in str(ei.value)
    # the first command is still retried as before
    assert bank.execute("account-1", "Deposit", {"amount": 1}, id=cid) == first


def test_a_command_id_used_for_another_command_of_many_events_is_a_duplicate(bank):
    cid = uuid.uuid4()
    bank.execute("account-1", "Split", {"n": 5}, id=cid)
    intervening(bank, 3)
    with nothing_written(bank), pytest.raises(cairn.DuplicateEvent):
        bank.execute("account-1", "Split", {"n": 4}, id=cid)


def test_the_aggregate_named_or_taken_from_the_category_is_one_command(bank):
    cid = uuid.uuid4()
    first = bank.execute("account-1", "Deposit", {"amount": 1}, id=cid)
    assert bank.execute("account-1", "Deposit", {"amount": 1}, id=cid, aggregate="account") == first


# ---------------------------------------------------------------------------------------
# Bad command ids: the argument's exception, nothing written.
# ---------------------------------------------------------------------------------------

BAD_IDS = {
    "not a uuid": ("not-a-uuid", ValueError),
    "empty str": ("", ValueError),
    "31 hex digits": ("0" * 31, ValueError),
    "33 hex digits": ("0" * 33, ValueError),
    "NUL inside": ("12345678-1234-5678-1234-567812345678\x00", ValueError),
    "lone surrogate": ("\ud800" * 32, ValueError),
    "int": (42, TypeError),
    "uuid as int": (uuid.uuid4().int, TypeError),
    "bytes": (uuid.uuid4().bytes, TypeError),
    "bool": (True, TypeError),
    "float": (1.5, TypeError),
    "list": ([str(uuid.uuid4())], TypeError),
}


@pytest.mark.parametrize("bad", sorted(BAD_IDS))
def test_a_bad_command_id_raises_and_writes_nothing(bank, bad):
    value, exc = BAD_IDS[bad]
    match = r"^id: .* is not a UUID$" if exc is ValueError else r"^id must be a uuid\.UUID, a str"
    with nothing_written(bank), pytest.raises(exc, match=match):
        bank.execute("account-1", "Deposit", {"amount": 1}, id=value)


def test_id_none_is_no_command_id(bank):
    a = bank.execute("account-1", "Deposit", {"amount": 1}, id=None)
    b = bank.execute("account-1", "Deposit", {"amount": 1}, id=None)
    assert (a.version, b.version) == (1, 2)


def test_a_command_id_on_a_readonly_store_raises_permission_error(bank, store_path):
    with cairn.open(store_path, readonly=True) as ro:
        with pytest.raises(PermissionError):
            ro.execute("account-1", "Deposit", {"amount": 1}, id=uuid.uuid4())


# ---------------------------------------------------------------------------------------
# Two processes executing the same command ids at once: each written once.
# ---------------------------------------------------------------------------------------

EXECUTOR = textwrap.dedent("""
    import json, sys, uuid, cairn
    path, n = sys.argv[1], int(sys.argv[2])
    ns = uuid.UUID("6f1c1b9e-59a2-4a4c-9d8e-3f0f7f8a1c00")
    out = []
    with cairn.open(path, durability="none") as s:
        print("ready", flush=True)
        sys.stdin.readline()          # start together
        for i in range(n):
            r = s.execute("account-1", "Deposit", {"amount": 1}, id=uuid.uuid5(ns, str(i)))
            out.append([r.version, r.position, r.first_position])
    print(json.dumps(out))
""")


def test_two_processes_executing_the_same_command_ids_write_each_once(store_path):
    n = 100
    with cairn.open(store_path, durability="none") as s:
        s.define_aggregate("account", ACCOUNT)
    results = [json.loads(out) for out in run_together(EXECUTOR, [(store_path, n)] * 2)]
    assert results[0] == results[1]  # both got the one result of each command
    with cairn.open(store_path) as s:
        assert s.stream_version("account-1") == n - 1 and s.head() == n
        assert [r[0] for r in results[0]] == list(range(n))
        assert s.load("account-1").state["balance"] == n
        s.verify()
