"""Where rows go (``engine.partitions``): which shard owns each row, the plan of each row's
place, the rate each partition is told, and the shard index an engine hands a process."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from orchestration_support import request

from ibimport.engine.partitions import (
    SHARD_INDEX_VARIABLES,
    Place,
    RateSpec,
    RowPlan,
    Shard,
    parse_rates,
    told_rate,
)
from ibimport.errors import ConfigError
from ibimport.manifest import ImageRequest

_names = st.from_regex(r"[A-Za-z][A-Za-z0-9 _-]{1,20}[A-Za-z0-9]", fullmatch=True)
_places = st.builds(
    Place,
    st.sampled_from([None, "prod", "staging"]),
    st.sampled_from([None, "us-east-1", "eu-west-1"]),
)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(_names, st.sampled_from(["1.0.0", "2.1.3"]), _places), max_size=40),
    count=st.integers(1, 9),
)
def test_every_row_belongs_to_exactly_one_shard(
    rows: list[tuple[str, str, Place]], count: int
) -> None:
    shards = [Shard(k, count) for k in range(count)]
    for name, version, place in rows:
        task = ImageRequest(
            name=name, semanticVersion=version, platform="Linux", vmImportTaskId="import-ami-1"
        )
        assert sum(shard.owns(place, task) for shard in shards) == 1


@settings(max_examples=30, deadline=None)
@given(row_numbers=st.sets(st.integers(1, 10_000), max_size=50), count=st.integers(1, 9))
def test_every_invalid_row_is_reported_by_exactly_one_shard(
    row_numbers: set[int], count: int
) -> None:
    for row in row_numbers:
        assert sum(Shard(k, count).owns_invalid(row) for k in range(count)) == 1


def test_a_rows_shard_is_its_image_not_its_spelling_and_holds_across_processes() -> None:
    place = Place("prod", "eu-west-1")
    spellings = ["Web 01", "web-01", "WEB_01"]
    owners = {
        spelling: [k for k in range(4) if Shard(k, 4).owns(place, request(1, name=spelling))]
        for spelling in spellings
    }
    assert len({tuple(owner) for owner in owners.values()}) == 1  # one image, one shard
    # A stable hash, not Python's salted hash(): these are the same on every machine and
    # every run (a changed assignment would re-shard a wave half done).
    default = Place(None, "us-east-1")
    assigned = [
        next(k for k in range(4) if Shard(k, 4).owns(default, request(i))) for i in range(1, 9)
    ]
    assert assigned == [1, 0, 2, 0, 2, 2, 1, 2]


def test_the_same_image_in_another_place_may_go_to_another_shard() -> None:
    task = request(1)
    owners = {
        place: next(k for k in range(8) if Shard(k, 8).owns(place, task))
        for place in (Place(p, r) for p in (None, "a", "b") for r in ("us-east-1", "eu-west-1"))
    }
    assert len(set(owners.values())) > 1  # the place is part of the key


def test_shards_share_a_wave_about_evenly() -> None:
    place = Place(None, "us-east-1")
    counts = Counter(
        next(k for k in range(4) if Shard(k, 4).owns(place, request(i))) for i in range(1, 2001)
    )
    assert sorted(counts) == [0, 1, 2, 3]
    assert all(400 <= n <= 600 for n in counts.values()), counts


@pytest.mark.parametrize(
    ("text", "shard"), [("0/4", Shard(0, 4)), (" 3 / 4 ", Shard(3, 4)), ("0/1", Shard(0, 1))]
)
def test_a_shard_is_parsed_from_k_over_n(text: str, shard: Shard) -> None:
    assert Shard.parse(text) == shard


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("4/4", "shard 4/4: the index must be 0 to 3"),
        ("1/0", "shard 1/0: the index must be 0 to -1"),
        ("1", "--shard '1': expected K/N, such as 0/4"),
        ("-1/4", "--shard '-1/4': expected K/N"),
    ],
)
def test_a_shard_out_of_range_or_malformed_is_refused_in_one_line(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match="^" + says.replace("(", r"\(")):
        Shard.parse(text)


@pytest.mark.parametrize("variable", SHARD_INDEX_VARIABLES)
def test_the_shard_index_comes_from_the_engine_running_the_process(variable: str) -> None:
    assert Shard.from_environment(5, {variable: "2"}) == Shard(2, 5)
    assert Shard.from_environment(5, {variable: "2", "UNRELATED": "4"}).label == "shard-2-of-5"


def test_a_kubernetes_index_wins_over_an_aws_batch_one() -> None:
    environ = {"AWS_BATCH_JOB_ARRAY_INDEX": "1", "JOB_COMPLETION_INDEX": "3"}
    assert Shard.from_environment(4, environ) == Shard(3, 4)


def test_without_an_index_the_shard_count_says_where_one_comes_from() -> None:
    with pytest.raises(ConfigError) as refused:
        Shard.from_environment(4, {})
    message = str(refused.value)
    assert "JOB_COMPLETION_INDEX, AWS_BATCH_JOB_ARRAY_INDEX is set" in message
    assert "--shard K/N" in message


def test_an_index_past_the_count_is_refused() -> None:
    with pytest.raises(ConfigError, match="the index must be 0 to 3"):
        Shard.from_environment(4, {"AWS_BATCH_JOB_ARRAY_INDEX": "4"})


# ------------------------------------------------------------ the plan of places


EAST, WEST, OTHER = Place(None, "us-east-1"), Place(None, "eu-west-1"), Place("p", "us-east-1")


def test_a_plan_numbers_its_places_as_it_first_meets_them() -> None:
    plan = RowPlan()
    for row, place in enumerate([WEST, None, EAST, WEST, None, OTHER], start=1):
        plan.add(row, place)
    assert plan.places == [WEST, EAST, OTHER]
    assert plan.place_index(EAST) == 1
    assert plan.place_index(Place("new", None)) == 3  # added, with no rows
    assert plan.places[3] == Place("new", None)
    assert plan.last_row_in(frozenset({3})) == 0


def test_a_plan_answers_which_rows_are_in_which_places_and_the_last_of_them() -> None:
    plan = RowPlan()
    plan.add(2, EAST)  # row 1 never added: nobody's
    plan.add(3, WEST)
    plan.add(4, None)  # another shard's
    plan.add(7, EAST)  # rows 5-6 skipped over
    plan.add(8, WEST)
    east, west = frozenset({0}), frozenset({1})
    assert [n for n in range(0, 12) if plan.rows_in(east)(n)] == [2, 7]
    assert [n for n in range(0, 12) if plan.rows_in(west)(n)] == [3, 8]
    assert [n for n in range(0, 12) if plan.rows_in(east | west)(n)] == [2, 3, 7, 8]
    assert plan.last_row_in(east) == 7
    assert plan.last_row_in(west) == 8
    assert plan.last_row_in(frozenset()) == 0


@settings(max_examples=60, deadline=None)
@given(assigned=st.lists(st.sampled_from([None, EAST, WEST, OTHER]), max_size=60))
def test_a_plan_holds_every_rows_place(assigned: list[Place | None]) -> None:
    plan = RowPlan()
    for row, place in enumerate(assigned, start=1):
        plan.add(row, place)
    for index, place in enumerate(plan.places):
        rows = [n for n, p in enumerate(assigned, start=1) if p == place]
        belongs = plan.rows_in(frozenset({index}))
        assert [n for n in range(len(assigned) + 2) if belongs(n)] == rows
        assert plan.last_row_in(frozenset({index})) == max(rows)
    every = plan.rows_in(frozenset(range(len(plan.places))))
    assert [n for n in range(len(assigned) + 2) if every(n)] == [
        n for n, p in enumerate(assigned, start=1) if p is not None
    ]


# ------------------------------------------------------------ told rates


def test_a_told_rate_is_the_regions_own_else_the_default_shared_by_the_shards() -> None:
    spec = parse_rates(["20", "eu-west-1=8"])
    assert spec == RateSpec(20.0, {"eu-west-1": 8.0})
    assert told_rate("eu-west-1", rates=spec, rate=None, shard=None) == 8.0
    assert told_rate("us-east-1", rates=spec, rate=None, shard=None) == 20.0
    assert told_rate("eu-west-1", rates=spec, rate=None, shard=Shard(1, 4)) == 2.0
    assert told_rate("us-east-1", rates=None, rate=12.0, shard=Shard(0, 3)) == 4.0
    assert told_rate("us-east-1", rates=None, rate=None, shard=Shard(0, 3)) is None
    # Only named Regions, without a default: the others are adaptive.
    assert (
        told_rate("ap-south-1", rates=parse_rates(["eu-west-1=8"]), rate=None, shard=None) is None
    )


@pytest.mark.parametrize(
    ("values", "says"),
    [
        (["fast"], "--rate 'fast': expected R or REGION=R, such as 20"),
        (["0"], "--rate '0': the rate must be above 0"),
        (["us-east-1=-2"], "--rate 'us-east-1=-2': the rate must be above 0"),
        (["Moon-1=3"], "--rate 'Moon-1=3': 'Moon-1' is not a Region's name"),
    ],
)
def test_a_bad_rate_is_refused_in_one_line(values: list[str], says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_rates(values)
    assert str(refused.value) == says


def test_a_library_callers_rate_holds_for_the_regions_its_rates_do_not_name() -> None:
    """``BatchConfig(rate=20, rates=...)``: the Regions ``rates`` names get their own rate,
    the others ``rate`` (as ``told_rate`` says), not an adaptive limiter; the CLI always
    passes a ``RateSpec``, even an empty one."""
    named = RateSpec(per_region={"eu-west-1": 8.0})
    assert told_rate("eu-west-1", rates=named, rate=20.0, shard=None) == 8.0
    assert told_rate("us-east-1", rates=named, rate=20.0, shard=Shard(0, 2)) == 10.0
    assert told_rate("us-east-1", rates=RateSpec(), rate=20.0, shard=None) == 20.0
    # A default told in ``rates`` is the more specific of the two.
    assert told_rate("us-east-1", rates=RateSpec(5.0), rate=20.0, shard=None) == 5.0
