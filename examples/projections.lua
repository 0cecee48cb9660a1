-- projections.lua -- read models of the bank, kept by cairn from the event log.
-- Three projections in one file, split by examples/bank.py at the "-- %%" markers.

-- %% balances: one state per account, the balance and how many events made it
return {
  source = { categories = { "account" } },
  partition = function(e) return e.stream end,
  init = function() return { balance = 0, events = 0 } end,
  apply = {
    Deposited = function(s, e) s.balance = s.balance + e.data.amount end,
    Withdrawn = function(s, e) s.balance = s.balance - e.data.amount end,
    ["*"] = function(s, e) s.events = s.events + 1 end,
  },
}

-- %% daily_totals: money in and out per calendar day (UTC)
local function day_of(ns)                        -- civil date from days since 1970-01-01
  local z = ns // 86400000000000 + 719468
  local era = (z >= 0 and z or z - 146096) // 146097
  local doe = z - era * 146097
  local yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
  local doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
  local mp = (5 * doy + 2) // 153
  local d = doy - (153 * mp + 2) // 5 + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  return string.format("%04d-%02d-%02d", y, m, d)
end
return {
  source = { types = { "Deposited", "Withdrawn" } },
  partition = function(e) return day_of(e.timestamp) end,
  init = function() return { deposited = 0, withdrawn = 0 } end,
  apply = {
    Deposited = function(s, e) s.deposited = s.deposited + e.data.amount end,
    Withdrawn = function(s, e) s.withdrawn = s.withdrawn + e.data.amount end,
  },
}

-- %% alerts: a LargeWithdrawal event, exactly once, for every withdrawal of 50 or more
return {
  source = { types = { "Withdrawn" } },
  apply = {
    Withdrawn = function(s, e)
      if e.data.amount >= 50 then
        emit("alerts-bank", "LargeWithdrawal", { account = e.stream, amount = e.data.amount },
             { causation_id = e.id })
      end
    end,
  },
}
