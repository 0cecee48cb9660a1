"""Getting started, step 3: projections -- read models in Lua that the store keeps from the
log (docs/getting-started.md)."""

import shutil

import cairn

BALANCES = """
return {
  source = { categories = { "account" } },        -- which events it reads
  partition = function(e) return e.stream end,    -- one state per account
  init = function() return { balance = 0, events = 0 } end,
  apply = {
    Deposited = function(s, e) s.balance = s.balance + e.data.amount end,
    Withdrawn = function(s, e) s.balance = s.balance - e.data.amount end,
    ["*"] = function(s, e) s.events = s.events + 1 end,   -- every event
  },
}
"""

TOTAL = """
return {
  mode = "inline",                                -- updated inside every append's commit
  source = { types = { "Deposited" } },
  init = function() return { deposited = 0 } end,
  apply = { Deposited = function(s, e) s.deposited = s.deposited + e.data.amount end },
}
"""

shutil.rmtree("projection-store", ignore_errors=True)  # start afresh on every run

with cairn.open("projection-store") as store:
    store.append("account-ann", [cairn.Event("Deposited", {"amount": 100}),
                                 cairn.Event("Withdrawn", {"amount": 30})])
    store.append("account-bob", [cairn.Event("Deposited", {"amount": 50})])

    store.define_projection("balances", BALANCES)  # async: runs when asked
    store.define_projection("total", TOTAL)        # inline: caught up at once
    balances = store.projection("balances")
    print(f"before a run: balances at position {balances.position}, state {balances.state('account-ann')}")
    print(f"run_projections() applied {store.run_projections()} events")
    for key in balances.partitions():
        print(f"  {key}: {balances.state(key)}")

    store.append("account-bob", [cairn.Event("Deposited", {"amount": 25})])
    print(f"after one more deposit: total {store.projection('total').state()} (inline), "
          f"account-bob {balances.state('account-bob')} (async, not run yet)")
    store.run_projections()
    print(f"after a run: account-bob {balances.state('account-bob')}, "
          f"position {balances.position}, status {balances.status}")
