"""Group commit (issue 15; docs/API.md section 1, "Durability"): durable appends, executes and
transactions of several threads share commits, and each caller still gets its own result or
its own error -- a wrong expected version, a failed condition or a script's rejection fails
that caller alone, with its own exception and fields, and never the others of its group.
Which calls share a commit depends on timing; what every caller gets does not, and that is
what these tests check (the C test tests/c/test_group.c forces the grouping)."""

import pytest

import cairn
from conftest import run_threads

ACCOUNT = """
return {
  init = function() return { balance = 0 } end,
  apply = {
    Deposited = function(s, e) s.balance = s.balance + e.data.amount end,
    Withdrawn = function(s, e) s.balance = s.balance - e.data.amount end,
  },
  decide = {
    Deposit = function(s, cmd) return { { type = "Deposited", data = { amount = cmd.data.amount } } } end,
    Withdraw = function(s, cmd)
      if s.balance < cmd.data.amount then
        reject("insufficient funds", { balance = s.balance, wanted = cmd.data.amount })
      end
      return { { type = "Withdrawn", data = { amount = cmd.data.amount } } }
    end,
  },
}
"""

THREADS = 12
ROUNDS = 15


@pytest.fixture
def store(tmp_path):
    s = cairn.open(str(tmp_path / "g"))  # durability full: the writes that group
    yield s
    s.close()


def test_each_caller_gets_its_own_result_or_its_own_error(store):
    """Every round, every thread appends: even threads correctly, odd ones with a version
    their stream does not have, or a condition that fails."""
    store.append("taken", [cairn.Event("Taken", tags=["seat:1"])])
    got = {}

    def work(k):
        mine = []
        for r in range(ROUNDS):
            stream = f"t-{k}"
            if k % 3 == 0:
                res = store.append(stream, [cairn.Event("Ok", {"r": r})], expected_version=r - 1)
                mine.append(("ok", res.version))
            elif k % 3 == 1:
                with pytest.raises(cairn.WrongExpectedVersion) as info:
                    store.append(stream, [cairn.Event("Bad")], expected_version=r + 5)
                e = info.value
                mine.append(("version", e.stream, e.expected, e.actual))
            else:
                with pytest.raises(cairn.ConditionFailed) as info:
                    store.append(stream, [cairn.Event("Bad")],
                                 condition=cairn.Condition(cairn.Query(cairn.QueryItem(tags="seat:1"))))
                mine.append(("condition", info.value.positions))
        got[k] = mine

    run_threads(work, THREADS)
    for k, mine in got.items():
        if k % 3 == 0:
            assert mine == [("ok", r) for r in range(ROUNDS)]
        elif k % 3 == 1:
            assert mine == [("version", f"t-{k}", r + 5, -1) for r in range(ROUNDS)]
        else:
            assert mine == [("condition", [1])] * ROUNDS
    assert store.head() == 1 + ROUNDS * len([k for k in range(THREADS) if k % 3 == 0])
    assert store.verify().events == store.head()


def test_a_rejected_command_fails_its_caller_alone_with_its_details(store):
    store.define_aggregate("account", ACCOUNT)
    for k in range(THREADS):
        store.execute(f"account-{k}", "Deposit", {"amount": 10})

    def work(k):
        for r in range(ROUNDS):
            if k % 2:
                with pytest.raises(cairn.CommandRejected) as info:
                    store.execute(f"account-{k}", "Withdraw", {"amount": 1000 + r})
                assert info.value.reason == "insufficient funds"
                assert info.value.details == {"balance": 10, "wanted": 1000 + r}
            else:
                assert store.execute(f"account-{k}", "Deposit", {"amount": 1}).version == r + 1

    run_threads(work, THREADS)
    for k in range(THREADS):
        state = store.load(f"account-{k}").state
        assert state == {"balance": 10 if k % 2 else 10 + ROUNDS}


def test_transactions_stay_all_or_nothing_when_grouped(store):
    def work(k):
        for r in range(ROUNDS):
            bad = (k + r) % 4 == 0
            try:
                with store.transaction() as tx:
                    tx.append(f"from-{k}", [cairn.Event("Sent", {"r": r})])
                    tx.append(f"to-{k}", [cairn.Event("Got", {"r": r})],
                              expected_version=99 if bad else cairn.ANY)
                assert not bad
            except cairn.WrongExpectedVersion:
                assert bad

    run_threads(work, THREADS)
    for k in range(THREADS):
        sent = [e.data["r"] for e in store.read_stream(f"from-{k}")]
        got = [e.data["r"] for e in store.read_stream(f"to-{k}")]
        assert sent == got == [r for r in range(ROUNDS) if (k + r) % 4]
