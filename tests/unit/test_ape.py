import math

import numpy as np

from recindex.eval.ape import average_partition_entropy, bucket_report


def test_positives_in_one_bucket_have_zero_entropy_and_spread_ones_log_n():
    offsets = np.array([0, 4, 8])
    items = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    together = np.array([5, 5, 5, 5])
    spread = np.array([0, 1, 2, 3])
    assert average_partition_entropy(together, offsets, items) == 0.0
    assert math.isclose(average_partition_entropy(spread, offsets, items), math.log(4))


def test_mean_over_queries_with_at_least_two_positives_and_repeats_counted_once():
    # query 0: items 0,0,1 -> distinct {0, 1} in buckets {0, 1}: log 2; query 1: one item, left out;
    # query 2: items 2, 3 in the same bucket: 0
    offsets = np.array([0, 3, 4, 6])
    items = np.array([0, 0, 1, 2, 2, 3])
    bucket_of = np.array([0, 1, 2, 2])
    assert math.isclose(average_partition_entropy(bucket_of, offsets, items), math.log(2) / 2)


def test_a_better_partition_has_lower_ape():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(10), 20)  # 200 items in 10 true groups
    offsets = np.arange(0, 1001, 5)
    items = np.concatenate([rng.choice(np.flatnonzero(groups == g), 5) for g in rng.integers(0, 10, 200)])
    aligned = groups
    shuffled = rng.permutation(groups)
    assert average_partition_entropy(aligned, offsets, items) < average_partition_entropy(
        shuffled, offsets, items
    )


def test_bucket_report_counts_empty_buckets():
    report = bucket_report(np.array([0, 0, 2, -1]), 4)
    assert report["empty"] == 2 and report["used"] == 2 and report["size_max"] == 2
