"""Unit tests of mlflow_sync.identity.pair: how objects of one side are paired with the other's."""

from __future__ import annotations

from dataclasses import dataclass

from mlflow_sync.identity import pair


@dataclass(frozen=True)
class Obj:
    id: str
    carried: str | None = None  # the source id tag a target object carries
    fingerprint: str | None = None  # what a source object *is*
    target_fingerprint: str | None = None  # the same, as read from a target object


def pair_objs(source, target):
    return pair(source, target, own_id=lambda o: o.id, carried_id=lambda o: o.carried,
                source_key=lambda o: o.fingerprint, target_key=lambda o: o.target_fingerprint)


def ids(pairs: dict[str, Obj]) -> dict[str, str]:
    return {source_id: obj.id for source_id, obj in pairs.items()}


def test_empty_inputs():
    assert pair_objs([], []) == ({}, [])


def test_nothing_on_the_target():
    assert pair_objs([Obj("s1", fingerprint="a"), Obj("s2", fingerprint="b")], []) == ({}, [])


def test_nothing_on_the_source_leaves_every_target_object_unpaired():
    target = [Obj("t1", carried="s1", target_fingerprint="a"), Obj("t2", target_fingerprint="b")]
    pairs, unpaired = pair_objs([], target)
    assert pairs == {}
    assert sorted(o.id for o in unpaired) == ["t1", "t2"]


def test_pairs_by_carried_source_id():
    source = [Obj("s1", fingerprint="x"), Obj("s2", fingerprint="y")]
    target = [Obj("t2", carried="s2", target_fingerprint="other"), Obj("t1", carried="s1", target_fingerprint="z")]
    pairs, unpaired = pair_objs(source, target)
    assert ids(pairs) == {"s1": "t1", "s2": "t2"}
    assert unpaired == []


def test_pairs_by_own_id_when_nothing_is_carried():
    """An export directory or a snapshot keeps the source's ids: the object is its own source id."""
    source = [Obj("r1", fingerprint="a"), Obj("r2", fingerprint="b")]
    target = [Obj("r2"), Obj("r1")]
    pairs, unpaired = pair_objs(source, target)
    assert ids(pairs) == {"r1": "r1", "r2": "r2"}
    assert unpaired == []


def test_empty_carried_id_falls_back_to_own_id():
    pairs, unpaired = pair_objs([Obj("r1")], [Obj("r1", carried="")])
    assert ids(pairs) == {"r1": "r1"}
    assert unpaired == []


def test_carried_id_wins_over_own_id():
    """A copy whose own id happens to equal another source id belongs to the source it names."""
    source = [Obj("s1"), Obj("s2")]
    target = [Obj("s2", carried="s1")]
    pairs, unpaired = pair_objs(source, target)
    assert ids(pairs) == {"s1": "s2"}
    assert "s2" not in pairs
    assert unpaired == []


def test_pairs_by_fingerprint_when_no_id_matches():
    source = [Obj("s1", fingerprint="run-a"), Obj("s2", fingerprint="run-b")]
    target = [Obj("t1", target_fingerprint="run-b"), Obj("t2", target_fingerprint="run-a")]
    pairs, unpaired = pair_objs(source, target)
    assert ids(pairs) == {"s1": "t2", "s2": "t1"}
    assert unpaired == []


def test_fingerprints_use_source_key_on_source_and_target_key_on_target():
    """source_key is applied to source objects only, target_key to target objects only."""
    source = [Obj("s1", fingerprint="a", target_fingerprint="WRONG")]
    target = [Obj("t1", fingerprint="WRONG", target_fingerprint="a")]
    pairs, _ = pair_objs(source, target)
    assert ids(pairs) == {"s1": "t1"}
    # swapped: only a wrong-side key function would find "a" on both sides
    source = [Obj("s1", fingerprint="b", target_fingerprint="a")]
    target = [Obj("t1", fingerprint="a", target_fingerprint="c")]
    pairs, unpaired = pair_objs(source, target)
    assert pairs == {}
    assert [o.id for o in unpaired] == ["t1"]


def test_carried_id_naming_an_unknown_source_falls_back_to_the_fingerprint():
    source = [Obj("s1", fingerprint="a")]
    target = [Obj("t1", carried="deleted-source", target_fingerprint="a")]
    pairs, unpaired = pair_objs(source, target)
    assert ids(pairs) == {"s1": "t1"}
    assert unpaired == []


def test_ids_are_tried_on_every_target_object_before_any_fingerprint():
    """An object carrying s2's id is s2's copy even if an earlier target object has s2's fingerprint."""
    source = [Obj("s1", fingerprint="same"), Obj("s2", fingerprint="same")]
    target = [Obj("u", target_fingerprint="same"), Obj("t", carried="s2", target_fingerprint="same")]
    pairs, unpaired = pair_objs(source, target)
    assert ids(pairs) == {"s1": "u", "s2": "t"}
    assert unpaired == []


def test_a_source_paired_by_id_is_not_paired_again_by_fingerprint():
    source = [Obj("s1", fingerprint="a")]
    target = [Obj("t1", carried="s1", target_fingerprint="zzz"), Obj("t2", target_fingerprint="a")]
    pairs, unpaired = pair_objs(source, target)
    assert ids(pairs) == {"s1": "t1"}
    assert [o.id for o in unpaired] == ["t2"]


def test_fingerprint_pairing_is_first_come_first_paired():
    source = [Obj("s1", fingerprint="k"), Obj("s2", fingerprint="k")]
    target = [Obj("t1", target_fingerprint="k"), Obj("t2", target_fingerprint="k"), Obj("t3", target_fingerprint="k")]
    pairs, unpaired = pair_objs(source, target)
    assert ids(pairs) == {"s1": "t1", "s2": "t2"}
    assert [o.id for o in unpaired] == ["t3"]


def test_duplicate_copies_of_one_source_pair_the_first_and_leave_the_second():
    source = [Obj("s1", fingerprint="a")]
    target = [Obj("t1", carried="s1", target_fingerprint="a"), Obj("t2", carried="s1", target_fingerprint="a")]
    pairs, unpaired = pair_objs(source, target)
    assert ids(pairs) == {"s1": "t1"}
    assert [o.id for o in unpaired] == ["t2"]


def test_duplicate_copy_by_own_id_is_left_unpaired():
    source = [Obj("r1")]
    target = [Obj("t9", carried="r1"), Obj("r1")]
    pairs, unpaired = pair_objs(source, target)
    assert ids(pairs) == {"r1": "t9"}
    assert [o.id for o in unpaired] == ["r1"]


def test_unpaired_leftovers_are_returned_and_paired_ones_are_not():
    source = [Obj("s1", fingerprint="a"), Obj("s2", fingerprint="b"), Obj("s3", fingerprint="c")]
    target = [
        Obj("t1", carried="s1"),
        Obj("extra1", target_fingerprint="zz"),
        Obj("t2", target_fingerprint="b"),
        Obj("extra2", carried="elsewhere", target_fingerprint="yy"),
        Obj("extra3", target_fingerprint="zz"),
    ]
    pairs, unpaired = pair_objs(source, target)
    assert ids(pairs) == {"s1": "t1", "s2": "t2"}
    assert "s3" not in pairs
    assert sorted(o.id for o in unpaired) == ["extra1", "extra2", "extra3"]
    assert not {id(o) for o in unpaired} & {id(o) for o in pairs.values()}


def test_every_target_object_is_either_paired_or_unpaired_exactly_once():
    source = [Obj(f"s{i}", fingerprint=f"k{i % 3}") for i in range(10)]
    target = ([Obj(f"c{i}", carried=f"s{i}") for i in range(0, 10, 3)]
              + [Obj(f"f{i}", target_fingerprint=f"k{i % 4}") for i in range(8)]
              + [Obj("c0-dup", carried="s0")])
    pairs, unpaired = pair_objs(source, target)
    seen = [o.id for o in pairs.values()] + [o.id for o in unpaired]
    assert sorted(seen) == sorted(o.id for o in target)
    assert set(pairs) <= {o.id for o in source}


def test_accepts_one_shot_iterables():
    source = (o for o in [Obj("s1", fingerprint="a"), Obj("s2", fingerprint="b")])
    target = (o for o in [Obj("t1", carried="s1"), Obj("t2", target_fingerprint="b")])
    pairs, unpaired = pair_objs(source, target)
    assert ids(pairs) == {"s1": "t1", "s2": "t2"}
    assert unpaired == []


def test_unhashable_objects_and_tuple_fingerprints():
    source = [{"id": "s1", "name": "n", "start": 5}, {"id": "s2", "name": "n", "start": 6}]
    target = [{"id": "t1", "tags": {}, "name": "n", "start": 6}, {"id": "t2", "tags": {"src": "s1"}, "name": "?", "start": 0}]
    pairs, unpaired = pair(source, target, own_id=lambda o: o["id"], carried_id=lambda o: o.get("tags", {}).get("src"),
                           source_key=lambda o: (o["name"], o["start"]), target_key=lambda o: (o["name"], o["start"]))
    assert {k: v["id"] for k, v in pairs.items()} == {"s1": "t2", "s2": "t1"}
    assert unpaired == []
