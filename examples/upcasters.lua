-- upcasters.lua -- old events in today's shape, applied whenever an event is read.
--
-- An account used to be opened without a currency (schema 1, the default); accounts opened
-- now say which (schema 2).  The stored events are never rewritten: reads return the
-- upcast event (raw=True returns it as stored), and aggregates and projections see it too.
return {
  Opened = {
    [1] = function(e)                          -- schema 1 -> 2
      e.data.currency = "EUR"
      return e
    end,
  },
}
