"""node.hubstate: access decisions and branch heads, driven by a fake clock."""

from __future__ import annotations

from swarmhub.node.hubstate import ANONYMOUS, AccessCache, BranchHeads, credential_key

REPO = ("model", "org/name")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_credentials_are_kept_as_digests_only() -> None:
    key = credential_key("Bearer hf_secret")
    assert key != "Bearer hf_secret" and "hf_secret" not in key and len(key) == 64
    assert credential_key(None) == credential_key("") == ANONYMOUS


def test_allowed_and_refused_decisions_hold_for_their_ttls() -> None:
    clock = Clock()
    access = AccessCache(allow_ttl=600, refuse_ttl=30, clock=clock)
    user, stranger = credential_key("Bearer a"), credential_key("Bearer b")
    access.record(REPO, user, True)
    access.record(REPO, stranger, False, 403, "GatedRepo", "restricted")
    assert access.decided(REPO, user) is not None and access.decided(REPO, user).allowed  # type: ignore[union-attr]
    refused = access.decided(REPO, stranger)
    assert refused is not None and not refused.allowed and refused.code == "GatedRepo"
    clock.now += 31
    assert access.decided(REPO, stranger) is None  # asked again soon
    assert access.decided(REPO, user) is not None
    clock.now += 600
    assert access.decided(REPO, user) is None


def test_an_anonymous_answer_makes_the_repo_public_until_its_ttl_ends() -> None:
    clock = Clock()
    access = AccessCache(allow_ttl=600, clock=clock)
    access.record(REPO, ANONYMOUS, True)
    assert access.decided(REPO, credential_key("Bearer anyone")) is not None and access.public(REPO)
    clock.now += 601
    assert access.decided(REPO, credential_key("Bearer anyone")) is None
    assert access.when_unreachable(REPO, credential_key("Bearer anyone")).allowed  # public stays public


def test_a_gated_repo_without_a_fresh_decision_is_refused_while_the_hub_is_down() -> None:
    clock = Clock()
    access = AccessCache(allow_ttl=600, clock=clock)
    user = credential_key("Bearer a")
    access.record(REPO, user, True)
    clock.now += 601
    down = access.when_unreachable(REPO, user)
    assert not down.allowed and down.status == 503 and "cannot be confirmed" in down.message


def test_branch_heads_are_fresh_for_their_ttl_and_stale_after() -> None:
    clock = Clock()
    heads = BranchHeads(ttl=30, clock=clock)
    assert heads.fresh(REPO, "main") is None
    heads.record(REPO, "main", "a" * 40)
    assert heads.fresh(REPO, "main") == "a" * 40
    clock.now += 31
    assert heads.fresh(REPO, "main") is None
    last = heads.last(REPO, "main")
    assert last is not None and last.commit == "a" * 40 and last.age(clock.now) == 31


def test_the_tables_are_bounded() -> None:
    heads = BranchHeads(max_entries=3, clock=Clock())
    for i in range(10):
        heads.record(("model", f"org/r{i}"), "main", f"{i:040x}")
    assert heads.last(("model", "org/r0"), "main") is None and heads.last(("model", "org/r9"), "main") is not None


def test_when_to_come_back_and_how_a_request_ended() -> None:
    from swarmhub.node.passthrough import come_back_after, outcome_of

    assert come_back_after({"retry-after": "7"}) == 7.0
    assert come_back_after({"retry-after": "Wed, 02 Dec 2026 10:00:30 GMT"}, now=1796205600.0) == 30.0
    assert come_back_after({"ratelimit": '"api";r=0;t=55'}) == 55.0  # the Hub's IETF RateLimit header
    assert come_back_after({"retry-after": "soon"}) is None and come_back_after({}) is None
    assert [outcome_of(s) for s in (200, 302, 404, 429, 503, None)] == ["ok", "ok", "4xx", "429", "5xx", "unreachable"]
