"""A store opened read-only cannot be written through any API (issue 5, "Security")."""

import pytest

import cairn


@pytest.fixture
def pair(tmp_path):
    path = str(tmp_path / "store")
    w = cairn.open(path, durability="none")
    w.define_projection("p", "return { apply = { T = function(s, e) s.n = 1 end } }")
    w.define_aggregate("a", """return { decide = { X = function(s, c) return { { type = "T" } } end },
        compensate = { T = function(s, e) return { { type = "U" } } end } }""")
    w.append("a-1", [cairn.Event("T", metadata={"correlation_id": "c"})])
    r = cairn.open(path, readonly=True)
    yield w, r
    r.close()
    w.close()


def _commit_tx(r):
    with r.transaction() as tx:
        tx.append("a-1", [cairn.Event("T")])


WRITES = {
    "append": lambda r: r.append("a-1", [cairn.Event("T")]),
    "transaction": _commit_tx,
    "define_projection": lambda r: r.define_projection("q", "return { apply = {} }"),
    "define_aggregate": lambda r: r.define_aggregate("b", "return {}"),
    "define_upcasters": lambda r: r.define_upcasters("return {}"),
    "execute": lambda r: r.execute("a-1", "X"),
    "compensate": lambda r: r.compensate("a-1", 0),
    "rollback": lambda r: r.rollback("c"),
    "run_projections": lambda r: r.run_projections(),
    "projection_reset": lambda r: r.projection("p").reset(),
    "delete_projection": lambda r: r.delete_projection("p"),
    "start_projections": lambda r: r.start_projections(),
    "named_subscription": lambda r: next(iter(r.subscribe(1, name="x", timeout=0.1))),
}


@pytest.mark.parametrize("name", sorted(WRITES))
def test_every_write_api_refuses_a_readonly_store(pair, name):
    w, r = pair
    before = [(e.position, e.type) for e in w.read_all()]
    scripts = w.scripts()
    with pytest.raises(PermissionError):
        WRITES[name](r)
    assert [(e.position, e.type) for e in w.read_all()] == before
    assert w.scripts() == scripts
    assert w.checkpoint("x") == 0
    # reads still work through the read-only handle, writes through the other
    assert [e.position for e in r.read_all()] == [p for p, _ in before]
    w.append("a-1", [cairn.Event("T")])
