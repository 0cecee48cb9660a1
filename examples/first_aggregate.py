"""Getting started, step 2: an aggregate in Lua -- state from events, commands that decide
new events inside the write transaction (docs/getting-started.md)."""

import shutil

import cairn

ACCOUNT = """
return {
  init = function() return { balance = 0 } end,
  apply = {                     -- how each event changes the state
    Deposited = function(s, e) s.balance = s.balance + e.data.amount end,
    Withdrawn = function(s, e) s.balance = s.balance - e.data.amount end,
  },
  decide = {                    -- commands: check the state, return the new events
    Deposit = function(s, cmd)
      return { { type = "Deposited", data = { amount = cmd.data.amount } } }
    end,
    Withdraw = function(s, cmd)
      if cmd.data.amount > s.balance then
        reject("insufficient funds", { balance = s.balance })
      end
      return { { type = "Withdrawn", data = { amount = cmd.data.amount } } }
    end,
  },
}
"""

shutil.rmtree("account-store", ignore_errors=True)  # start afresh on every run

with cairn.open("account-store") as store:
    store.define_aggregate("account", ACCOUNT)  # stored in the store, for every process
    store.execute("account-ann", "Deposit", {"amount": 100})  # category "account" -> script "account"
    r = store.execute("account-ann", "Withdraw", {"amount": 30})
    print(f"withdrew 30: account-ann at version {r.version}, position {r.position}")

    try:
        store.execute("account-ann", "Withdraw", {"amount": 500})
    except cairn.CommandRejected as err:
        print(f"rejected: {err.reason} {err.details}; nothing written")

    a = store.load("account-ann")
    print(f"state {a.state} at version {a.version}")
    print(f"state at version 0: {store.load('account-ann', version=0).state}")
    for e in store.read_stream("account-ann"):  # the events the commands decided
        print(f"  v{e.version} {e.type} {e.data}")
