"""unlearnkit/compose/shards.py: forgetting with records, access rights."""
import json

import pytest

from unlearnkit.compose.shards import Shard, ShardSet, append_forget_log, parse_tags


def make_set():
    return ShardSet(
        (
            Shard("public", model="m0"),
            Shard(
                "getty",
                model="m1",
                tags=frozenset({"licensed"}),
                source="/w/getty.safetensors",
                sha256="ab" * 32,
            ),
            Shard("alice", model="m2", tags=frozenset({"licensed", "alice"})),
        )
    )


def test_forget_drops_the_shard_and_records_its_hash():
    shards = make_set()
    rest, record = shards.forget("getty", reason="consent withdrawn")
    assert rest.names == ["public", "alice"]
    assert "m1" not in [s.model for s in rest]
    assert shards.names == ["public", "getty", "alice"]  # input untouched
    assert (record.shard, record.sha256, record.remaining) == ("getty", "ab" * 32, ("public", "alice"))
    assert record.when.endswith("+00:00")


def test_forget_unknown_or_last_shard_is_refused():
    with pytest.raises(KeyError, match="'nobody'"):
        make_set().forget("nobody")
    with pytest.raises(ValueError, match="only shard"):
        ShardSet((Shard("one", model=None),)).forget("one")


def test_forget_log_appends_json_lines(tmp_path):
    shards = make_set()
    _, r1 = shards.forget("getty")
    _, r2 = shards.forget("alice")
    log = tmp_path / "forget.jsonl"
    append_forget_log(log, r1)
    append_forget_log(log, r2)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["shard"] for line in lines] == ["getty", "alice"]


def test_restrict_serves_only_shards_within_rights():
    shards = make_set()
    assert shards.restrict([]).names == ["public"]
    assert shards.restrict(["licensed"]).names == ["public", "getty"]
    assert shards.restrict(["licensed", "alice"]).names == ["public", "getty", "alice"]


def test_request_outside_rights_is_refused_not_silently_dropped():
    with pytest.raises(PermissionError, match="'alice'.*'alice'"):
        make_set().restrict(["licensed"], requested=["public", "alice"])
    assert make_set().restrict(["licensed"], requested=["getty"]).names == ["getty"]


def test_duplicate_names_and_tag_parsing():
    with pytest.raises(ValueError, match="repeated.*'a'"):
        ShardSet((Shard("a", None), Shard("a", None)))
    assert parse_tags("licensed, alice  bob") == {"licensed", "alice", "bob"}
