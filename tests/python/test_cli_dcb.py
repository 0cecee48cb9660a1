"""The command line's dynamic consistency boundaries (docs/API.md sections 4 and 5): cairn
query (items from --type/--tag and --query JSON, the head last), cairn append's
--condition/--after, with the one error line of a failed condition, and cairn decide (a
decision model over its boundary)."""

import pytest

import cairn

from cli_support import jsonl, mistake, ok


@pytest.fixture
def courses(tmp_path):
    path = tmp_path / "courses"
    with cairn.open(path, durability="none") as s:
        s.append("c-1", [cairn.Event("CourseDefined", {"capacity": 2}, tags=["course:c1"])])
        s.append("s-1", [cairn.Event("StudentSubscribed", tags=["course:c1", "student:s1"])])
        s.append("s-2", [cairn.Event("StudentSubscribed", tags=["course:c2", "student:s1"])])
    return path


def test_query_reads_what_an_item_or_json_items_match_then_the_head(courses):
    rows = jsonl(ok("query", courses, "--type", "StudentSubscribed", "--tag", "course:c1", "--json"))
    assert [r.get("position") for r in rows[:-1]] == [2] and rows[-1] == {"head": 3}
    rows = jsonl(ok("query", courses, "--query",
                    '[{"types": ["CourseDefined"]}, {"tags": ["student:s1"]}]', "--json"))
    assert [r.get("position") for r in rows[:-1]] == [1, 2, 3]
    rows = jsonl(ok("query", courses, "--tag", "student:s1", "--limit", "1", "--json"))
    assert [r.get("position") for r in rows[:-1]] == [2] and rows[-1] == {"head": 2}
    plain = ok("query", courses, "--tag", "course:c2").stdout.splitlines()
    assert plain[0].split("\t")[2] == "s-2" and plain[-1] == "head 3"
    assert ok("query", courses).stdout.splitlines()[-1] == "head 3"  # no item: every event


def test_append_on_a_condition_holds_or_fails_with_one_line(courses):
    cond = '{"types": ["StudentSubscribed"], "tags": ["course:c1"]}'
    line = mistake("append", courses, "s-3", "StudentSubscribed", "--tag", "course:c1",
                   "--condition", cond, "--after", "1")
    assert line.startswith("cairn: error: append condition failed") and "at 2;" in line
    (r,) = jsonl(ok("append", courses, "s-3", "StudentSubscribed", "--tag", "course:c1",
                    "--condition", cond, "--after", "3", "--json"))
    assert r["position"] == 4
    with cairn.open(courses, readonly=True) as s:
        assert s.head() == 4


@pytest.mark.parametrize("args, words", [
    (("query", "--query", "{"), "--query: not valid JSON"),
    (("query", "--query", '[{"types": []}]'), "an empty list"),
    (("query", "--query", '[{"kinds": ["A"]}]'), "only \"types\" and \"tags\""),
    (("query", "--query", '"A"'), "must be a JSON list"),
    (("append", "s-9", "T", "--after", "3"), "--after: only with --condition"),
    (("append", "s-9", "T", "--condition", "[1]"), "item 0"),
])
def test_bad_queries_are_one_line_and_write_nothing(courses, args, words):
    cmd, *rest = args
    line = mistake(cmd, courses, *rest)
    assert words in line
    with cairn.open(courses, readonly=True) as s:
        assert s.head() == 3


COURSES_LUA = """
return {
  boundary = function(cmd)
    return { { types = { "CourseDefined", "StudentSubscribed" }, tags = { "course:" .. cmd.data.course } } }
  end,
  init = function() return { capacity = 0, taken = 0 } end,
  apply = {
    CourseDefined = function(s, e) s.capacity = e.data.capacity end,
    StudentSubscribed = function(s, e) s.taken = s.taken + 1 end,
  },
  decide = {
    Subscribe = function(s, cmd)
      if s.taken >= s.capacity then reject("course full", { capacity = s.capacity }) end
      return { { type = "StudentSubscribed", data = cmd.data, tags = { "course:" .. cmd.data.course } } }
    end,
  },
}
"""


def test_decide_runs_a_decision_model_over_its_boundary(courses, tmp_path):
    lua = tmp_path / "courses.lua"
    lua.write_text(COURSES_LUA)
    ok("define", courses, "aggregate", "course", lua)
    (r,) = jsonl(ok("decide", courses, "course", "Subscribe", '{"course": "c1", "student": "s9"}',
                    "--stream", "student-s9", "--json"))
    assert r == {"stream": "student-s9", "version": 0, "position": 4, "first_position": 4}
    line = mistake("decide", courses, "course", "Subscribe", '{"course": "c1", "student": "s8"}',
                   "--stream", "student-s8")
    assert line == 'cairn: error: command rejected: course full {"capacity": 2}'
    line = mistake("decide", courses, "nope", "Subscribe", "{}", "--stream", "x")
    assert "no aggregate script named 'nope'" in line
    mistake("decide", courses, "course", "Subscribe", code=2)  # --stream is required
    with cairn.open(courses, readonly=True) as s:
        assert s.head() == 4
