"""Red-team scripts shared by the cheap tests (tests/python) and the long harness
(tests/reliability/hostile.py): the library time bombs of issue 10 item 3, and the shared
subtree of item 4, tiny in Lua and 2^40 values as JSON."""

DAG = "local t = {1}; for i = 1, 40 do t = {t, t} end"

# Each bomb, unbudgeted, runs for minutes at the default limits.
LIBRARY_BOMBS = {
    "eq_16mib": """
        local a, b = string.rep('x', 16 << 20), string.rep('x', 16 << 20)
        local n = 0
        for i = 1, 20000 do if a == b then n = n + 1 end end
        return n""",
    "lt_16mib": """
        local a, b = string.rep('x', 16 << 20), string.rep('x', 16 << 20)
        local n = 0
        for i = 1, 20000 do if a < b then n = n + 1 end end
        return n""",
    "plain_find_30mib": """
        local s = string.rep('a', 30 << 20)
        local n = 0
        for i = 1, 20000 do if s:find('b', 1, true) then n = n + 1 end end
        return n""",
    "utf8_len_30mib": """
        local s = string.rep('a', 30 << 20)
        local n = 0
        for i = 1, 20000 do n = n + utf8.len(s) end
        return n""",
    "table_insert_front": """
        local t = {}
        for i = 1, 1000000 do t[i] = i end
        for i = 1, 20000 do table.insert(t, 1, i) end
        return #t""",
    "table_sort_long_strings": """
        local t, base = {}, string.rep('x', 1 << 20)
        for i = 1, 30 do t[i] = base .. string.char(65 + i % 26) end
        for r = 1, 10000 do table.sort(t); table.sort(t, function(a, b) return a > b end) end
        return #t""",
    "upper_30mib": """
        local s = string.rep('a', 16 << 20)
        for i = 1, 20000 do s:upper() end""",
}
