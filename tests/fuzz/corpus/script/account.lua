-- account.lua -- a bank account as a cairn aggregate.
--
-- apply:      how each event changes the state (reducers)
-- decide:     commands; they run inside the write transaction, so the balance they check
--             cannot change before their events are written
-- compensate: how to undo an event by appending its inverse (used by rollback)
return {
  init = function()
    return { balance = 0, open = false, owner = json.null, history = 0 }
  end,

  apply = {
    Opened    = function(s, e) s.open = true; s.owner = e.data.owner end,
    Deposited = function(s, e) s.balance = s.balance + e.data.amount end,
    Withdrawn = function(s, e) s.balance = s.balance - e.data.amount end,
    Closed    = function(s, e) s.open = false end,
    ["*"]     = function(s, e) s.history = s.history + 1 end,
  },

  decide = {
    Open = function(s, cmd)
      if s.open then reject("already open") end
      return { { type = "Opened", data = { owner = cmd.data.owner } } }
    end,
    Deposit = function(s, cmd)
      if not s.open then reject("account closed") end
      if cmd.data.amount <= 0 then reject("amount must be positive", { amount = cmd.data.amount }) end
      return { { type = "Deposited", data = { amount = cmd.data.amount } } }
    end,
    Withdraw = function(s, cmd)
      if not s.open then reject("account closed") end
      if s.balance < cmd.data.amount then
        reject("insufficient funds", { balance = s.balance, requested = cmd.data.amount })
      end
      return { { type = "Withdrawn", data = { amount = cmd.data.amount } } }
    end,
  },

  compensate = {
    Withdrawn = function(s, e) return { { type = "Deposited", data = { amount = e.data.amount } } } end,
    Deposited = function(s, e) return { { type = "Withdrawn", data = { amount = e.data.amount } } } end,
  },

  snapshot_every = 100,
}
