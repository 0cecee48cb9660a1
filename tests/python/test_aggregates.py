"""Aggregates (spec 2 "Aggregates", section 3 "Aggregate"): load with version=/at= time
travel, execute (decide inside the write transaction, reject, metadata, expected_version, no
events), compensate, rollback, snapshots, and execute racing across processes."""

import datetime
import hashlib
import textwrap
import threading
import time
import uuid

import pytest

import cairn
from conftest import check_usable, nothing_written, run_together

UTC = datetime.timezone.utc

ACCOUNT = """\
return {
  init = function() return { balance = 0, open = false } end,
  apply = {
    Opened    = function(s, e) s.open = true; s.owner = e.data.owner end,
    Deposited = function(s, e) s.balance = s.balance + e.data.amount end,
    Withdrawn = function(s, e) s.balance = s.balance - e.data.amount end,
  },
  decide = {
    Open = function(s, cmd)
      if s.open then reject("already open") end
      return { { type = "Opened", data = { owner = cmd.data.owner } } }
    end,
    Deposit = function(s, cmd)
      return { { type = "Deposited", data = { amount = cmd.data.amount } } }
    end,
    Withdraw = function(s, cmd)
      if s.balance < cmd.data.amount then
        reject("insufficient funds", { balance = s.balance, wanted = cmd.data.amount })
      end
      return { { type = "Withdrawn", data = { amount = cmd.data.amount } } }
    end,
    Nothing = function(s, cmd) return {} end,
    Many = function(s, cmd)
      local out = {}
      for i = 1, cmd.data.n do out[i] = { type = "Deposited", data = { amount = i } } end
      return out
    end,
    Tagged = function(s, cmd)
      return { { type = "Deposited", data = { amount = 1 }, tags = { "t1", "t2" }, schema = 2,
                 metadata = { source = "script", correlation_id = "from-script" } } }
    end,
    Echo = function(s, cmd)
      return { { type = "Echoed", data = { type = cmd.type, data = cmd.data,
                                            meta = cmd.metadata } } }
    end,
    RejectPlain = function(s, cmd) reject("nope") end,
    RejectText = function(s, cmd) reject("nope", "just text") end,
    RejectList = function(s, cmd) reject("nope", { 1, 2, { x = json.null } }) end,
    NotAList = function(s, cmd) return 42 end,
    NoType = function(s, cmd) return { { data = { amount = 1 } } } end,
  },
  compensate = {
    Withdrawn = function(s, e)
      return { { type = "Deposited",
                 data = { amount = e.data.amount, balance_before = s.balance } } }
    end,
    Deposited = function(s, e)
      return { { type = "Withdrawn", data = { amount = e.data.amount },
                 metadata = { reason = "compensation" } } }
    end,
    Opened = function(s, e) return {} end,
  },
}
"""


@pytest.fixture
def bank(store):
    store.define_aggregate("account", ACCOUNT)
    return store


def deposit(amount, **kw):
    return cairn.Event("Deposited", {"amount": amount}, **kw)


def events_of(store, stream):
    return list(store.read_stream(stream))


# ---------------------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------------------

def test_load_folds_the_streams_events(bank):
    bank.append("account-1", [cairn.Event("Opened", {"owner": "ann"}), deposit(100), deposit(5),
                              cairn.Event("Withdrawn", {"amount": 30})])
    a = bank.load("account-1")
    assert isinstance(a, cairn.Aggregate)
    assert a.state == {"balance": 75, "open": True, "owner": "ann"}
    assert a.version == 3
    assert a.stream == "account-1"
    assert a.aggregate == "account"


def test_load_of_a_missing_stream_is_the_init_state_at_version_minus_one(bank):
    a = bank.load("account-none")
    assert a.state == {"balance": 0, "open": False}
    assert a.version == -1


def test_load_without_init_starts_from_an_empty_object(store):
    store.define_aggregate("counter", """
        return { apply = { Hit = function(s, e) s.n = (s.n or 0) + 1 end } }""")
    assert store.load("counter-1").state == {}
    store.append("counter-1", [cairn.Event("Hit"), cairn.Event("Hit")])
    assert store.load("counter-1").state == {"n": 2}


def test_types_without_a_reducer_leave_the_state_unchanged(bank):
    bank.append("account-1", [deposit(10), cairn.Event("Noted", {"text": "hi"}), deposit(1)])
    a = bank.load("account-1")
    assert a.state["balance"] == 11
    assert a.version == 2


def test_a_reducer_may_return_a_new_state(store):
    store.define_aggregate("list", """
        return {
          init = function() return { items = {} } end,
          apply = { Added = function(s, e)
            local items = {}
            for i, v in ipairs(s.items) do items[i] = v end
            items[#items + 1] = e.data
            return { items = items }
          end },
        }""")
    store.append("list-1", [cairn.Event("Added", "a"), cairn.Event("Added", "b")])
    assert store.load("list-1").state == {"items": ["a", "b"]}


def test_apply_star_runs_for_every_event_after_the_types_own_handler(store):
    store.define_aggregate("log", """
        return {
          init = function() return { seen = {}, n = 0 } end,
          apply = {
            A = function(s, e) s.seen[#s.seen + 1] = "A" end,
            ["*"] = function(s, e) s.n = s.n + 1; s.seen[#s.seen + 1] = "*" .. e.type end,
          },
        }""")
    store.append("log-1", [cairn.Event("A"), cairn.Event("B")])
    assert store.load("log-1").state == {"seen": ["A", "*A", "*B"], "n": 2}


def test_reducers_see_the_event_fields(store):
    store.define_aggregate("probe", """
        return { apply = { E = function(s, e)
          s.last = { type = e.type, data = e.data, metadata = e.metadata, id = e.id,
                     stream = e.stream, version = e.version, position = e.position,
                     ts = math.type(e.timestamp), schema = e.schema, tags = e.tags }
        end } }""")
    ev = cairn.Event("E", {"x": 1}, metadata={"m": True}, tags=["a", "b"], schema=3)
    store.append("other", [cairn.Event("Other")])
    r = store.append("probe-1", [ev])
    last = store.load("probe-1").state["last"]
    assert last == {"type": "E", "data": {"x": 1}, "metadata": {"m": True}, "id": str(ev.id),
                    "stream": "probe-1", "version": 0, "position": r.position,
                    "ts": "integer", "schema": 3, "tags": ["a", "b"]}


def test_load_defaults_to_the_streams_category(store):
    store.define_aggregate("account", ACCOUNT)
    store.define_aggregate("plain", """
        return { init = function() return { name = "plain" } end }""")
    assert store.load("account-42-x").aggregate == "account"
    assert store.load("plain").state == {"name": "plain"}
    assert store.load("plain").aggregate == "plain"


def test_load_with_an_explicit_aggregate(bank):
    bank.append("acct/7", [deposit(7)])
    a = bank.load("acct/7", aggregate="account")
    assert a.state["balance"] == 7
    assert a.aggregate == "account"


def test_load_without_an_aggregate_script_raises_key_error(bank):
    bank.append("order-1", [deposit(1)])
    with pytest.raises(KeyError):
        bank.load("order-1")
    with pytest.raises(KeyError):
        bank.load("account-1", aggregate="nosuch")
    check_usable(bank)


def test_load_argument_types(bank):
    with pytest.raises(TypeError, match="stream"):
        bank.load(1)
    with pytest.raises(TypeError, match="aggregate"):
        bank.load("account-1", aggregate=b"account")
    with pytest.raises(TypeError, match="version"):
        bank.load("account-1", version="1")
    with pytest.raises(TypeError, match="version"):
        bank.load("account-1", version=True)
    with pytest.raises(TypeError):
        bank.load("account-1", 1)  # keyword-only


def test_load_reserved_stream_name_is_a_value_error(bank):
    with pytest.raises(ValueError):
        bank.load("$all", aggregate="account")


def test_aggregate_objects_are_small_values(bank):
    bank.append("account-1", [deposit(3)])
    a = bank.load("account-1")
    assert "account-1" in repr(a) and "version=0" in repr(a)
    with pytest.raises(AttributeError):
        a.version = 5
    with pytest.raises(TypeError):
        cairn.Aggregate()
    a.state["balance"] = 99  # a fresh dict per load
    assert bank.load("account-1").state["balance"] == 3


# ---------------------------------------------------------------------------------------
# Time travel
# ---------------------------------------------------------------------------------------

def test_load_version_gives_the_state_as_it_was(bank):
    bank.append("account-1", [deposit(1), deposit(10), deposit(100)])
    assert [bank.load("account-1", version=v).state["balance"] for v in range(3)] == [1, 11, 111]
    assert bank.load("account-1", version=0).version == 0
    a = bank.load("account-1", version=50)  # beyond the last: the last
    assert a.version == 2 and a.state["balance"] == 111
    assert bank.load("account-1", version=2**70).version == 2
    a = bank.load("account-none", version=0)
    assert a.version == -1 and a.state["balance"] == 0


def test_load_version_must_be_non_negative(bank):
    with pytest.raises(ValueError, match="version"):
        bank.load("account-1", version=-1)


def test_load_at_is_inclusive_at_microsecond_precision(bank):
    recorded = []
    for amount in (1, 10, 100, 1000):
        r = bank.append("account-1", [deposit(amount)])
        recorded.append(bank.get(r.position))
        time.sleep(0.002)
    for i, e in enumerate(recorded):
        a = bank.load("account-1", at=e.timestamp)
        assert a.version == e.version, (i, e.timestamp)
        assert a.state["balance"] == sum((1, 10, 100, 1000)[: i + 1])
        before = e.timestamp - datetime.timedelta(microseconds=1)
        assert bank.load("account-1", at=before).version == e.version - 1


def test_load_at_accepts_any_timezone(bank):
    r = bank.append("account-1", [deposit(5)])
    ts = bank.get(r.position).timestamp
    plus2 = ts.astimezone(datetime.timezone(datetime.timedelta(hours=2)))
    assert bank.load("account-1", at=plus2).version == 0
    minus5 = (ts - datetime.timedelta(seconds=1)).astimezone(
        datetime.timezone(datetime.timedelta(hours=-5)))
    assert bank.load("account-1", at=minus5).version == -1


def test_load_at_before_the_first_event_is_the_init_state(bank):
    bank.append("account-1", [deposit(5)])
    a = bank.load("account-1", at=datetime.datetime(2000, 1, 1, tzinfo=UTC))
    assert a.version == -1 and a.state == {"balance": 0, "open": False}


def test_load_at_far_past_and_far_future(bank):
    bank.append("account-1", [deposit(5)])
    assert bank.load("account-1", at=datetime.datetime(1, 1, 1, tzinfo=UTC)).version == -1
    far = datetime.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert bank.load("account-1", at=far).version == 0


def test_load_at_naive_datetime_is_a_value_error(bank):
    with pytest.raises(ValueError, match="at"):
        bank.load("account-1", at=datetime.datetime.now())


def test_load_at_wrong_type_is_a_type_error(bank):
    for bad in ("2024-01-01", 1700000000, datetime.date(2024, 1, 1), 1.5):
        with pytest.raises(TypeError, match="at"):
            bank.load("account-1", at=bad)


def test_load_version_and_at_together_is_a_value_error(bank):
    with pytest.raises(ValueError):
        bank.load("account-1", version=0, at=datetime.datetime.now(UTC))


# ---------------------------------------------------------------------------------------
# execute
# ---------------------------------------------------------------------------------------

def test_execute_appends_the_decided_events(bank):
    r = bank.execute("account-1", "Open", {"owner": "ann"})
    assert isinstance(r, cairn.AppendResult)
    assert (r.version, r.position, r.first_position) == (0, 1, 1)
    r = bank.execute("account-1", "Deposit", {"amount": 50})
    assert (r.version, r.position, r.first_position) == (1, 2, 2)
    got = events_of(bank, "account-1")
    assert [(e.type, e.data) for e in got] == [("Opened", {"owner": "ann"}),
                                               ("Deposited", {"amount": 50})]
    assert bank.load("account-1").state == {"balance": 50, "open": True, "owner": "ann"}


def test_execute_decides_on_the_current_state(bank):
    bank.execute("account-1", "Deposit", {"amount": 10})
    bank.execute("account-1", "Withdraw", {"amount": 4})
    with pytest.raises(cairn.CommandRejected) as ei:
        bank.execute("account-1", "Withdraw", {"amount": 7})
    assert ei.value.details == {"balance": 6, "wanted": 7}


def test_execute_many_events_are_contiguous(bank):
    bank.append("other", [deposit(1)])
    r = bank.execute("account-1", "Many", {"n": 5})
    assert (r.version, r.first_position, r.position) == (4, 2, 6)
    assert [e.data["amount"] for e in events_of(bank, "account-1")] == [1, 2, 3, 4, 5]


def test_execute_passes_type_data_and_metadata_to_decide(bank):
    bank.execute("echo-1", "Echo", {"k": [1, 2.5, None]}, aggregate="account",
                 metadata={"user": "u1"})
    (e,) = events_of(bank, "echo-1")
    assert e.data["type"] == "Echo"
    assert e.data["data"] == {"k": [1, 2.5, None]}
    assert e.data["meta"] == {"user": "u1"}


def test_execute_reject_raises_command_rejected_and_writes_nothing(bank):
    bank.execute("account-1", "Deposit", {"amount": 3})
    with nothing_written(bank), pytest.raises(cairn.CommandRejected) as ei:
        bank.execute("account-1", "Withdraw", {"amount": 5})
    e = ei.value
    assert isinstance(e, cairn.Error)
    assert e.reason == "insufficient funds"
    assert e.details == {"balance": 3, "wanted": 5}
    assert "insufficient funds" in str(e)


def test_reject_without_details_has_details_none(bank):
    with nothing_written(bank), pytest.raises(cairn.CommandRejected) as ei:
        bank.execute("account-1", "RejectPlain")
    assert ei.value.reason == "nope"
    assert ei.value.details is None


def test_reject_details_may_be_any_json_value(bank):
    with pytest.raises(cairn.CommandRejected) as ei:
        bank.execute("account-1", "RejectText")
    assert ei.value.details == "just text"
    with pytest.raises(cairn.CommandRejected) as ei:
        bank.execute("account-1", "RejectList")
    assert ei.value.details == [1, 2, {"x": None}]


def test_decide_returning_no_events_writes_nothing(bank):
    with nothing_written(bank):
        r = bank.execute("account-1", "Nothing")
    assert r == cairn.AppendResult(version=-1, position=None, first_position=None)
    bank.execute("account-1", "Deposit", {"amount": 1})
    bank.execute("account-1", "Deposit", {"amount": 1})
    head = bank.head()
    r = bank.execute("account-1", "Nothing")
    assert (r.version, r.position, r.first_position) == (1, None, None)
    assert bank.head() == head


def test_execute_unknown_command_is_a_value_error_naming_it(bank):
    with nothing_written(bank), pytest.raises(ValueError, match="Teleport"):
        bank.execute("account-1", "Teleport", {"to": "mars"})


def test_execute_without_an_aggregate_script_raises_key_error(bank):
    with nothing_written(bank), pytest.raises(KeyError):
        bank.execute("order-1", "Deposit", {"amount": 1})
    with nothing_written(bank), pytest.raises(KeyError):
        bank.execute("account-1", "Deposit", {"amount": 1}, aggregate="nosuch")


def test_execute_copies_the_call_metadata_onto_every_event(bank):
    meta = {"correlation_id": "c-1", "causation_id": "cmd-9", "user": {"id": 7}}
    bank.execute("account-1", "Many", {"n": 3}, metadata=meta)
    got = events_of(bank, "account-1")
    assert len(got) == 3
    assert all(e.metadata == meta for e in got)


def test_execute_call_metadata_wins_over_the_events_own(bank):
    bank.execute("account-1", "Tagged", metadata={"correlation_id": "call", "user": "u"})
    (e,) = events_of(bank, "account-1")
    assert e.metadata == {"source": "script", "correlation_id": "call", "user": "u"}
    assert e.tags == ("t1", "t2")
    assert e.schema == 2


def test_execute_without_metadata_keeps_the_scripts_metadata(bank):
    bank.execute("account-1", "Tagged")
    bank.execute("account-1", "Deposit", {"amount": 1})
    a, b = events_of(bank, "account-1")
    assert a.metadata == {"source": "script", "correlation_id": "from-script"}
    assert not b.metadata  # None (or empty): no metadata anywhere


def test_execute_with_expected_version(bank):
    r = bank.execute("account-1", "Deposit", {"amount": 1}, expected_version=cairn.NO_STREAM)
    assert r.version == 0
    r = bank.execute("account-1", "Deposit", {"amount": 1}, expected_version=0)
    assert r.version == 1
    r = bank.execute("account-1", "Deposit", {"amount": 1}, expected_version=cairn.STREAM_EXISTS)
    assert r.version == 2
    with nothing_written(bank), pytest.raises(cairn.WrongExpectedVersion) as ei:
        bank.execute("account-1", "Deposit", {"amount": 1}, expected_version=1)
    assert (ei.value.stream, ei.value.expected, ei.value.actual) == ("account-1", 1, 2)
    with nothing_written(bank), pytest.raises(cairn.WrongExpectedVersion):
        bank.execute("account-1", "Deposit", {"amount": 1}, expected_version=cairn.NO_STREAM)
    with nothing_written(bank), pytest.raises(cairn.WrongExpectedVersion):
        bank.execute("account-2", "Deposit", {"amount": 1},
                     expected_version=cairn.STREAM_EXISTS)


def test_execute_expected_version_argument_checks(bank):
    with pytest.raises(ValueError, match="expected_version"):
        bank.execute("account-1", "Deposit", {"amount": 1}, expected_version=-3)
    with pytest.raises(TypeError, match="expected_version"):
        bank.execute("account-1", "Deposit", {"amount": 1}, expected_version=True)


def test_execute_argument_types(bank):
    with nothing_written(bank):
        with pytest.raises(TypeError, match="stream"):
            bank.execute(None, "Deposit")
        with pytest.raises(TypeError, match="command"):
            bank.execute("account-1", 5)
        with pytest.raises(TypeError, match="aggregate"):
            bank.execute("account-1", "Deposit", {"amount": 1}, aggregate=1)
        with pytest.raises(TypeError, match="data"):
            bank.execute("account-1", "Deposit", {"amount": object()})
        with pytest.raises(TypeError, match="data"):
            bank.execute("account-1", "Deposit", {"amount": float("nan")})
        with pytest.raises(ValueError, match="data"):
            bank.execute("account-1", "Deposit", {"amount": 2**64})
        with pytest.raises(TypeError, match="metadata"):
            bank.execute("account-1", "Deposit", {"amount": 1}, metadata=["a"])
        with pytest.raises(TypeError, match="metadata"):
            bank.execute("account-1", "Deposit", {"amount": 1}, metadata={"a": {1, 2}})
        with pytest.raises(ValueError, match="metadata"):
            bank.execute("account-1", "Deposit", {"amount": 1}, metadata={"a": -2**64})


def test_execute_decide_returning_a_non_list_is_a_script_error(bank):
    with nothing_written(bank), pytest.raises(cairn.ScriptError) as ei:
        bank.execute("account-1", "NotAList")
    assert ei.value.script == "account"


def test_execute_event_without_a_type_is_a_script_error(bank):
    with nothing_written(bank), pytest.raises(cairn.ScriptError):
        bank.execute("account-1", "NoType")


def test_execute_on_a_readonly_store_is_a_permission_error(bank, store_path):
    bank.execute("account-1", "Deposit", {"amount": 1})
    with cairn.open(store_path, readonly=True) as ro:
        with pytest.raises(PermissionError):
            ro.execute("account-1", "Deposit", {"amount": 1})
        assert ro.load("account-1").state["balance"] == 1


def test_execute_from_threads_never_overdraws(bank):
    bank.execute("account-1", "Deposit", {"amount": 100})
    outcomes = []

    def worker():
        ok = rejected = 0
        for _ in range(40):
            try:
                bank.execute("account-1", "Withdraw", {"amount": 1})
                ok += 1
            except cairn.CommandRejected:
                rejected += 1
        outcomes.append((ok, rejected))

    ts = [threading.Thread(target=worker) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert sum(ok for ok, _ in outcomes) == 100
    assert sum(r for _, r in outcomes) == 60
    assert bank.load("account-1").state["balance"] == 0


# ---------------------------------------------------------------------------------------
# Concurrency across processes: decide runs inside the write transaction.
# ---------------------------------------------------------------------------------------

WITHDRAWER = textwrap.dedent("""
    import sys, cairn
    path, n = sys.argv[1], int(sys.argv[2])
    ok = rejected = 0
    with cairn.open(path, durability="none") as s:
        print("ready", flush=True)
        sys.stdin.readline()          # start together
        for i in range(n):
            try:
                s.execute("account-1", "Withdraw", {"amount": 3})
                ok += 1
            except cairn.CommandRejected:
                rejected += 1
    print(ok, rejected)
""")


def test_processes_executing_withdrawals_never_overdraw(store_path):
    with cairn.open(store_path, durability="none") as s:
        s.define_aggregate("account", ACCOUNT)
        s.execute("account-1", "Deposit", {"amount": 300})  # 100 withdrawals of 3
    results = [tuple(map(int, out.split()))
               for out in run_together(WITHDRAWER, [(store_path, 60)] * 4)]
    assert sum(ok for ok, _ in results) == 100
    assert sum(r for _, r in results) == 140
    with cairn.open(store_path, durability="none") as s:
        balance = 0
        for e in s.read_stream("account-1"):
            balance += e.data["amount"] if e.type == "Deposited" else -e.data["amount"]
            assert balance >= 0, e
        assert balance == 0
        assert s.load("account-1").state["balance"] == 0
        assert s.stream_version("account-1") == 100
        assert s.verify().events == 101


# ---------------------------------------------------------------------------------------
# compensate
# ---------------------------------------------------------------------------------------

def test_compensate_appends_the_handlers_events(bank):
    bank.execute("account-1", "Deposit", {"amount": 100})
    bank.execute("account-1", "Withdraw", {"amount": 30})
    withdrawn = events_of(bank, "account-1")[1]
    r = bank.compensate("account-1", 1)
    assert isinstance(r, cairn.AppendResult)
    assert (r.version, r.position, r.first_position) == (2, 3, 3)
    e = bank.get(r.position)
    assert e.type == "Deposited"
    assert e.data["amount"] == 30
    assert e.metadata["compensates"] == str(withdrawn.id)
    assert e.metadata["causation_id"] == str(withdrawn.id)
    assert bank.load("account-1").state["balance"] == 100


def test_compensate_handler_gets_the_current_state(bank):
    bank.execute("account-1", "Deposit", {"amount": 100})
    bank.execute("account-1", "Withdraw", {"amount": 30})
    bank.execute("account-1", "Deposit", {"amount": 500})
    r = bank.compensate("account-1", 1)
    assert bank.get(r.position).data == {"amount": 30, "balance_before": 570}


def test_compensate_metadata_layers(bank):
    bank.execute("account-1", "Deposit", {"amount": 10}, metadata={"correlation_id": "orig"})
    original = events_of(bank, "account-1")[0]
    r = bank.compensate("account-1", 0, metadata={"user": "u", "reason": "call",
                                                  "compensates": str(uuid.uuid4()),
                                                  "causation_id": "bogus"})
    e = bank.get(r.position)
    # call metadata, then the script's (reason), then compensates/causation_id on top
    assert e.metadata == {"user": "u", "reason": "compensation",
                          "compensates": str(original.id), "causation_id": str(original.id)}


def test_compensate_twice_raises_already_compensated(bank):
    bank.execute("account-1", "Deposit", {"amount": 10})
    bank.compensate("account-1", 0)
    with nothing_written(bank), pytest.raises(cairn.AlreadyCompensated):
        bank.compensate("account-1", 0)
    assert issubclass(cairn.AlreadyCompensated, cairn.Error)


def test_a_second_compensation_by_plain_append_raises_already_compensated(bank):
    bank.execute("account-1", "Deposit", {"amount": 10})
    original = events_of(bank, "account-1")[0]
    bank.compensate("account-1", 0)
    again = cairn.Event("Withdrawn", {"amount": 10}, metadata={"compensates": str(original.id)})
    with nothing_written(bank), pytest.raises(cairn.AlreadyCompensated):
        bank.append("account-1", [again])


def test_compensate_type_without_handler_raises_not_compensable(bank):
    bank.append("account-1", [cairn.Event("Noted", {"text": "x"})])
    with nothing_written(bank), pytest.raises(cairn.NotCompensable):
        bank.compensate("account-1", 0)
    assert issubclass(cairn.NotCompensable, cairn.Error)


def test_compensate_handler_returning_no_events_is_a_script_error(bank):
    bank.execute("account-1", "Open", {"owner": "x"})
    with nothing_written(bank), pytest.raises(cairn.ScriptError) as ei:
        bank.compensate("account-1", 0)
    assert ei.value.script == "account"


def test_compensate_a_version_the_stream_lacks_is_a_value_error(bank):
    with nothing_written(bank), pytest.raises(ValueError):
        bank.compensate("account-1", 0)
    bank.execute("account-1", "Deposit", {"amount": 10})
    with nothing_written(bank), pytest.raises(ValueError):
        bank.compensate("account-1", 1)
    with pytest.raises(ValueError, match="version"):
        bank.compensate("account-1", -1)
    with pytest.raises(TypeError, match="version"):
        bank.compensate("account-1", "0")


def test_compensate_without_an_aggregate_script_raises_key_error(bank):
    bank.append("order-1", [deposit(1)])
    with nothing_written(bank), pytest.raises(KeyError):
        bank.compensate("order-1", 0)
    r = bank.compensate("order-1", 0, aggregate="account")
    assert bank.get(r.position).type == "Withdrawn"


def test_compensate_argument_types(bank):
    bank.execute("account-1", "Deposit", {"amount": 10})
    with nothing_written(bank):
        with pytest.raises(TypeError, match="metadata"):
            bank.compensate("account-1", 0, metadata="m")
        with pytest.raises(TypeError, match="aggregate"):
            bank.compensate("account-1", 0, aggregate=3)
        with pytest.raises(TypeError, match="stream"):
            bank.compensate(3, 0)


# ---------------------------------------------------------------------------------------
# rollback
# ---------------------------------------------------------------------------------------

def saga(bank, cid="saga-1"):
    """Three events of one correlation over two streams, with unrelated ones between."""
    m = {"correlation_id": cid}
    bank.execute("account-a", "Deposit", {"amount": 100})                  # unrelated
    bank.execute("account-a", "Withdraw", {"amount": 40}, metadata=m)
    bank.execute("account-b", "Deposit", {"amount": 40}, metadata=m)
    bank.execute("account-b", "Deposit", {"amount": 1}, metadata={"correlation_id": "other"})
    bank.execute("account-b", "Deposit", {"amount": 2}, metadata=m)
    return [e for e in bank.read_all() if (e.metadata or {}).get("correlation_id") == cid]


def test_rollback_compensates_newest_first_in_one_commit(bank):
    originals = saga(bank)
    head = bank.head()
    rs = bank.rollback("saga-1")
    assert len(rs) == 3 and all(isinstance(r, cairn.AppendResult) for r in rs)
    assert [r.position for r in rs] == [head + 1, head + 2, head + 3]
    comps = [bank.get(r.position) for r in rs]
    assert [c.metadata["compensates"] for c in comps] == [str(e.id) for e in reversed(originals)]
    assert all(c.metadata["causation_id"] == c.metadata["compensates"] for c in comps)
    assert all(c.metadata["correlation_id"] == "saga-1" for c in comps)
    assert [(c.stream, c.type) for c in comps] == [("account-b", "Withdrawn"),
                                                  ("account-b", "Withdrawn"),
                                                  ("account-a", "Deposited")]
    assert [r.version for r in rs] == [3, 4, 2]
    assert bank.load("account-a").state["balance"] == 100
    assert bank.load("account-b").state["balance"] == 1


def test_rollback_again_returns_nothing(bank):
    saga(bank)
    assert len(bank.rollback("saga-1")) == 3
    with nothing_written(bank):
        assert bank.rollback("saga-1") == []  # compensations are never selected


def test_rollback_of_an_unknown_correlation_returns_an_empty_list(bank):
    saga(bank)
    with nothing_written(bank):
        assert bank.rollback("nobody") == []


def test_rollback_skips_events_already_compensated(bank):
    originals = saga(bank)
    bank.compensate("account-b", 0)  # the Deposit of 40
    rs = bank.rollback("saga-1")
    comps = [bank.get(r.position).metadata["compensates"] for r in rs]
    assert comps == [str(originals[2].id), str(originals[0].id)]


def test_rollback_selects_plain_appends_too(bank):
    bank.append("account-c", [deposit(5, metadata={"correlation_id": "x"})])
    (r,) = bank.rollback("x")
    assert bank.get(r.position).type == "Withdrawn"


@pytest.mark.parametrize("metadata, key", [
    ({"correlation_id": 42}, "correlation_id must be a str, not a number"),
    ({"correlation_id": None}, "correlation_id must be a str, not null"),
    ({"causation_id": ["c"]}, "causation_id must be a str, not a list"),
    ({"compensates": "not-an-event-id"}, "compensates must be the id of an event"),
    ({"compensates": 7}, "compensates must be the id of an event"),
])
def test_reserved_metadata_keys_have_types(bank, metadata, key):
    # {"correlation_id": 42} was accepted and rollback could never find it; a compensates
    # that is not an event id linked nothing: both are refused at append, naming the key
    with nothing_written(bank), pytest.raises(ValueError, match=key):
        bank.append("account-c", [deposit(5, metadata=metadata)])
    with nothing_written(bank), pytest.raises(ValueError, match=key):
        bank.execute("account-c", "Deposit", {"amount": 1}, metadata=metadata)
    bank.append("account-c", [deposit(5, metadata={"correlation_id": "x", "causation_id": "y"})])
    assert [bank.get(r.position).data["amount"] for r in bank.rollback("x")] == [5]


def test_rollback_is_all_or_nothing(bank):
    # the event that cannot be compensated is the oldest: the others come first
    bank.append("account-b", [cairn.Event("Noted", {}, metadata={"correlation_id": "saga-1"})])
    saga(bank)
    with nothing_written(bank), pytest.raises(cairn.NotCompensable):
        bank.rollback("saga-1")
    bank.execute("account-a", "Open", {"owner": "o"}, metadata={"correlation_id": "saga-2"})
    bank.execute("account-a", "Deposit", {"amount": 1}, metadata={"correlation_id": "saga-2"})
    with nothing_written(bank), pytest.raises(cairn.ScriptError):
        bank.rollback("saga-2")


def test_rollback_argument_type(bank):
    with pytest.raises(TypeError, match="correlation_id"):
        bank.rollback(1)


# ---------------------------------------------------------------------------------------
# Snapshots
# ---------------------------------------------------------------------------------------

SNAPSHOTTED = """\
return {
  init = function() return { sum = 0, n = 0 } end,
  apply = { Added = function(s, e) s.sum = s.sum + e.data.v; s.n = s.n + 1 end },
  decide = { Add = function(s, cmd) return { { type = "Added", data = { v = cmd.data.v } } } end },
  snapshot_every = 100,
}
"""


def fill(store, stream, n, v=lambda i: i):
    for start in range(0, n, 250):
        store.append(stream, [cairn.Event("Added", {"v": v(i)})
                              for i in range(start, min(n, start + 250))])


def test_snapshots_bound_the_events_a_load_applies(store):
    store.define_aggregate("sum", SNAPSHOTTED)
    fill(store, "sum-1", 1000)
    first = store.load("sum-1")
    assert first.state == {"sum": sum(range(1000)), "n": 1000}
    assert first.version == 999
    again = store.load("sum-1")
    assert again.state == first.state
    assert again.applied <= 100, again.applied


def test_first_load_of_100k_events_applies_at_most_100(store):
    # Snapshots are written by the appends that cross the interval, so even the first load
    # of a long stream (written by plain appends, never loaded) folds at most 100 events.
    store.define_aggregate("sum", SNAPSHOTTED)
    for start in range(0, 100_000, 1000):
        store.append("sum-big", [cairn.Event("Added", {"v": 1}) for _ in range(1000)])
    a = store.load("sum-big")
    assert a.state == {"sum": 100_000, "n": 100_000}
    assert a.version == 99_999
    assert a.applied <= 100, a.applied


def test_snapshots_written_by_execute(store):
    store.define_aggregate("sum", SNAPSHOTTED)
    for i in range(250):
        store.execute("sum-1", "Add", {"v": i})
    a = store.load("sum-1")
    assert a.state == {"sum": sum(range(250)), "n": 250}
    assert a.applied <= 100, a.applied


def test_snapshots_and_time_travel(store):
    store.define_aggregate("sum", SNAPSHOTTED)
    fill(store, "sum-1", 1000)
    store.load("sum-1")
    a = store.load("sum-1", version=550)
    assert a.state == {"sum": sum(range(551)), "n": 551}
    assert a.version == 550
    assert a.applied <= 100, a.applied
    e = store.get(551 + 1)  # version 551 at position 552
    a = store.load("sum-1", at=e.timestamp)
    assert a.state["n"] >= 552 and a.version >= 551
    assert a.state["n"] == a.version + 1
    assert a.state["sum"] == sum(range(a.version + 1))


def test_without_snapshots_load_applies_every_event(store):
    store.define_aggregate("sum", SNAPSHOTTED.replace("snapshot_every = 100,", ""))
    fill(store, "sum-1", 300)
    store.load("sum-1")
    a = store.load("sum-1")
    assert a.applied == 300
    assert store.load("sum-1", version=9).applied == 10


def test_redefining_the_aggregate_invalidates_its_snapshots(store):
    store.define_aggregate("sum", SNAPSHOTTED)
    fill(store, "sum-1", 1000)
    store.load("sum-1")
    store.define_aggregate("sum", SNAPSHOTTED.replace("s.sum + e.data.v", "s.sum + 2 * e.data.v"))
    a = store.load("sum-1")
    assert a.state == {"sum": 2 * sum(range(1000)), "n": 1000}
    store.define_aggregate("sum", SNAPSHOTTED)
    assert store.load("sum-1").state == {"sum": sum(range(1000)), "n": 1000}


def test_defining_upcasters_invalidates_snapshots(store):
    store.define_aggregate("sum", SNAPSHOTTED)
    fill(store, "sum-1", 1000)
    store.load("sum-1")
    store.define_upcasters("""
        return { Added = { [1] = function(e) e.data.v = e.data.v * 10; return e end } }""")
    assert store.load("sum-1").state == {"sum": 10 * sum(range(1000)), "n": 1000}
    store.define_upcasters("return {}")
    assert store.load("sum-1").state == {"sum": sum(range(1000)), "n": 1000}


def test_snapshots_per_stream(store):
    store.define_aggregate("sum", SNAPSHOTTED)
    fill(store, "sum-1", 300)
    fill(store, "sum-2", 300, v=lambda i: 1)
    store.load("sum-1")
    store.load("sum-2")
    assert store.load("sum-1").state == {"sum": sum(range(300)), "n": 300}
    assert store.load("sum-2").state == {"sum": 300, "n": 300}


# ---------------------------------------------------------------------------------------
# The GIL and closing while a script runs
# ---------------------------------------------------------------------------------------

WORK = """\
return {
  init = function() return { n = 0 } end,
  apply = { Work = function(s, e)
    local x = 0
    for i = 1, e.data do x = x + i end
    s.n = s.n + 1
  end },
  decide = { Work = function(s, cmd)
    local x = 0
    for i = 1, cmd.data do x = x + i end
    return { { type = "Worked", data = x } }
  end },
}
"""


@pytest.fixture
def worker_store(store_path):
    s = cairn.open(store_path, durability="none", script_instruction_limit=10**10,
                   script_time_limit=None)
    s.define_aggregate("work", WORK)
    s.append("work-1", [cairn.Event("Work", 60_000_000)])
    yield s
    s.close()


def ticks_during(call):
    """How far a pure-Python thread counts while `call` runs in this one, as a share of
    what it counts while this thread computes without the GIL.  Near 1 when `call` releases the GIL; near 0 when it
    holds it (only the switch interval before `call` gets the GIL counts then)."""
    ticks = 0
    stop = False

    def spin():
        nonlocal ticks
        while not stop:
            ticks += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        time.sleep(0.02)
        # The reference: the count while this thread keeps a core busy without the GIL
        # (hashlib releases it over large buffers), so that `call` is measured under the
        # same competition for the machine's cores; against a sleeping thread, a loaded
        # 2-core machine made a GIL-releasing call look like 0.24 of free.
        data = b"x" * (1 << 20)
        before, start = ticks, time.perf_counter()
        while time.perf_counter() - start < 0.1:
            hashlib.sha256(data).digest()
        rate = (ticks - before) / (time.perf_counter() - start)
        before, start = ticks, time.perf_counter()
        call()
        elapsed = time.perf_counter() - start
        during = ticks - before
    finally:
        stop = True
        t.join()
    assert elapsed > 0.1, "the script ran too fast to tell"
    return during / (rate * elapsed)


def test_load_releases_the_gil_while_scripts_run(worker_store):
    assert ticks_during(lambda: worker_store.load("work-1")) > 0.3


def test_execute_releases_the_gil_while_scripts_run(worker_store):
    assert ticks_during(lambda: worker_store.execute("work-2", "Work", 60_000_000)) > 0.3


def test_close_while_a_script_runs_lets_it_finish(worker_store):
    out = []
    t = threading.Thread(target=lambda: out.append(worker_store.load("work-1").state))
    t.start()
    time.sleep(0.02)
    worker_store.close()
    t.join(60)
    assert out == [{"n": 1}]
    with pytest.raises(cairn.StoreClosed):
        worker_store.load("work-1")


# ---------------------------------------------------------------------------------------
# Closed stores
# ---------------------------------------------------------------------------------------

def test_aggregate_calls_on_a_closed_store_raise_store_closed(store_path):
    s = cairn.open(store_path, durability="none")
    s.define_aggregate("account", ACCOUNT)
    s.close()
    calls = [lambda: s.load("account-1"),
             lambda: s.execute("account-1", "Deposit", {"amount": 1}),
             lambda: s.compensate("account-1", 0),
             lambda: s.rollback("x")]
    for call in calls:
        with pytest.raises(cairn.StoreClosed):
            call()


SUBJECT = """
return {
  init = function() return {} end,
  apply = { ['*'] = function(s, e) end },
  decide = {
    Plain = function(s, cmd) return { { type = "Happened" } } end,
    Secret = function(s, cmd) return { { type = "Happened", data = { x = 1 }, subject = "user-42" } } end,
  },
  compensate = {
    Happened = function(s, e) return { { type = "Undone", subject = "user-42" } } end,
  },
}
"""


def test_a_decided_or_compensating_event_may_carry_a_subject(store):
    # as cairn.Event(subject=...): the data is encrypted for that subject (spec 6)
    store.define_aggregate("doc", SUBJECT)
    store.execute("doc-1", "Secret")
    store.compensate("doc-1", 0)
    got = [(e.type, e.data, e.subject, e.forgotten) for e in store.read_stream("doc-1")]
    assert got == [("Happened", {"x": 1}, "user-42", False), ("Undone", None, "user-42", False)]
    assert store._subject_key("user-42") is not None
    store.forget("user-42")
    got = [(e.type, e.data, e.forgotten) for e in store.read_stream("doc-1")]
    assert got == [("Happened", None, True), ("Undone", None, True)]


@pytest.mark.parametrize("subject,match", [
    ('""', "subject must be 1..1024 bytes of UTF-8, got 0"),
    ("5", "subject must be a string, not an integer"),
    ('"a\\0b"', "subject must not contain NUL"),
])
def test_a_bad_subject_in_a_decided_event_is_refused(store, subject, match):
    src = SUBJECT.replace('subject = "user-42" } } end,\n  },\n  compensate',
                          'subject = ' + subject + ' } } end,\n  },\n  compensate')
    assert src != SUBJECT
    store.define_aggregate("doc", src)
    with pytest.raises(cairn.ScriptError, match=match) as ei:
        store.execute("doc-1", "Secret")
    assert ei.value.script == "doc"
    assert store.head() == 0
    store.execute("doc-1", "Plain")  # the store is usable afterwards
    assert store.head() == 1
