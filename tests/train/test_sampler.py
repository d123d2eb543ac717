from egovlp.train.sampler import ResumableDistributedSampler, ShardedEvalSampler


def test_resumable_sampler_is_seeded_sharded_and_skips():
    full = [ResumableDistributedSampler(103, r, 2, seed=5) for r in range(2)]
    for s in full:
        s.set_epoch(3)
    a, b = list(full[0]), list(full[1])
    assert len(a) == len(b) == 51 and not set(a) & set(b)
    again = ResumableDistributedSampler(103, 0, 2, seed=5)
    again.set_epoch(3, start=20)
    assert list(again) == a[20:] and len(again) == 31
    other = ResumableDistributedSampler(103, 0, 2, seed=5)
    other.set_epoch(4)
    assert list(other) != a


def test_sharded_eval_sampler_covers_each_item_once():
    shards = [list(ShardedEvalSampler(7, r, 3)) for r in range(3)]
    assert sorted(i for shard in shards for i in shard) == list(range(7))
    assert [len(s) for s in shards] == [3, 2, 2]
