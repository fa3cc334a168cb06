"""Tests for batching.py: the split rule, by property and against tf.distribute's rebatching."""

import hypothesis
import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from hypothesis import strategies as st

from replica_strategy import batching

import virtual_devices  # noqa: F401  (splits the CPU into logical devices on import)

_SETTINGS = hypothesis.settings(max_examples=150, deadline=None, derandomize=True)


class SplitSizesTest(tf.test.TestCase, parameterized.TestCase):
    @hypothesis.given(st.integers(0, 64), st.integers(1, 8))
    @_SETTINGS
    def test_sizes_cover_the_batch_and_none_exceeds_ceil(self, batch_size, num_replicas):
        sizes = batching.split_sizes(batch_size, num_replicas)
        self.assertLen(sizes, num_replicas)
        self.assertEqual(sum(sizes), batch_size)
        self.assertLessEqual(max(sizes), -(-batch_size // num_replicas))
        # Replicas fill in order: once one is short, every later one is empty.
        self.assertEqual(sizes, sorted(sizes, reverse=True))

    @parameterized.named_parameters(
        ("even", 12, 3, [4, 4, 4]),
        ("uneven", 10, 4, [3, 3, 3, 1]),
        ("fewer_rows_than_replicas", 2, 4, [1, 1, 0, 0]),
        ("empty", 0, 2, [0, 0]),
    )
    def test_documented_examples(self, batch_size, num_replicas, expected):
        self.assertEqual(batching.split_sizes(batch_size, num_replicas), expected)

    def test_bad_arguments_name_what_was_received(self):
        with self.assertRaisesRegex(ValueError, "num_replicas=0"):
            batching.split_sizes(4, 0)
        with self.assertRaisesRegex(ValueError, "batch_size=-1"):
            batching.split_sizes(-1, 2)

    @parameterized.named_parameters(("two", 2), ("three", 3), ("four", 4))
    def test_rule_matches_tf_distribute_rebatching(self, num_replicas):
        # Our documented rule is the one MirroredStrategy's input pipeline applies, batch by batch.
        strategy = tf.distribute.MirroredStrategy(virtual_devices.cpus(num_replicas))
        for batch_size in range(1, 14):
            dataset = tf.data.Dataset.range(batch_size).batch(batch_size)
            element = next(iter(strategy.experimental_distribute_dataset(dataset)))
            sizes = [int(t.shape[0]) for t in strategy.experimental_local_results(element)]
            self.assertEqual(sizes, batching.split_sizes(batch_size, num_replicas), batch_size)


class SplitAndMergeTest(tf.test.TestCase):
    @hypothesis.given(st.integers(0, 64), st.integers(1, 8))
    @_SETTINGS
    def test_split_is_contiguous_ordered_and_merge_restores_it(self, batch_size, num_replicas):
        batch = {
            "image": tf.reshape(tf.range(batch_size * 6, dtype=tf.float32), [batch_size, 2, 3]),
            "ids": (tf.range(batch_size), tf.range(batch_size) * 2),
        }
        sub_batches = batching.split_batch(batch, num_replicas)
        start = 0
        for sub_batch, size in zip(sub_batches, batching.split_sizes(batch_size, num_replicas)):
            self.assertAllEqual(sub_batch["ids"][0], np.arange(start, start + size))
            start += size
        merged = batching.merge_batches(sub_batches)
        tf.nest.map_structure(self.assertAllEqual, merged, batch)

    def test_inputs_with_different_batch_sizes_are_rejected(self):
        with self.assertRaisesRegex(ValueError, r"first dimensions: \[3, 4\]"):
            batching.split_batch((tf.zeros([3, 1]), tf.zeros([4, 1])), 2)

    def test_scalars_cannot_be_merged(self):
        with self.assertRaisesRegex(ValueError, "Cannot merge per-replica scalars"):
            batching.merge_batches([tf.constant(1.0), tf.constant(2.0)])


if __name__ == "__main__":
    tf.test.main()
