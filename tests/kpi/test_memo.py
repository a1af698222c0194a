"""The shared LRU cache: bounded, least recently used first out, cleared on demand."""

from kpi.memo import Memo


def test_the_least_recently_used_goes_first():
    memo = Memo(2)
    memo.put("a", 1)
    memo.put("b", 2)
    assert memo.get("a") == 1  # now "b" is the least recently used
    memo.put("c", 3)
    assert (memo.get("a"), memo.get("b"), memo.get("c")) == (1, None, 3)


def test_clear_forgets_everything():
    memo = Memo(4)
    memo.put("a", 1)
    memo.clear()
    assert memo.get("a") is None
