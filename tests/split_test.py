"""`ReplicaStrategy(split=...)`: the argument, `strategy.split`, and the sizes rule.

Numerics, datasets and "auto" are in uneven_split_test.py.
"""

import math

import virtual_devices

# isort: split

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorflow.python.framework import config as tf_config

from replica_strategy import ReplicaStrategy, batching
from replica_strategy import split as split_lib

_TWO = ["/cpu:1", "/cpu:2"]
_THREE = ["/cpu:1", "/cpu:2", "/cpu:3"]

_weights = st.lists(
    st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=6,
)


class SplitArgumentTest(tf.test.TestCase, parameterized.TestCase):
    def test_even_is_the_default_and_reports_equal_fractions(self):
        self.assertEqual(ReplicaStrategy(_TWO).split, (0.5, 0.5))
        self.assertEqual(ReplicaStrategy(_THREE, split="even").split, (1 / 3,) * 3)
        # Every row weighs 1/B under every split, the even split included.
        self.assertTrue(ReplicaStrategy(_TWO).extended.weights_rows)

    @parameterized.named_parameters(
        ("ints", [3, 1], (0.75, 0.25)),
        ("floats", (0.2, 0.6), (0.25, 0.75)),
        ("numpy_numbers", [np.float32(1.0), np.int64(3)], (0.25, 0.75)),
        ("numpy_array", np.array([2.0, 2.0]), (0.5, 0.5)),
        ("huge", [1e308, 1e308], (0.5, 0.5)),
    )
    def test_weights_become_fractions_that_sum_to_one(self, split, fractions):
        strategy = ReplicaStrategy(_TWO, split=split)
        self.assertAllClose(strategy.split, fractions)
        self.assertAlmostEqual(math.fsum(strategy.split), 1.0)
        self.assertTrue(strategy.extended.weights_rows)

    def test_auto_starts_even(self):
        strategy = ReplicaStrategy(_THREE, split="auto")
        self.assertAllClose(strategy.split, (1 / 3,) * 3)
        self.assertTrue(strategy.extended.weights_rows)

    def test_one_replica_takes_every_batch_whatever_the_split(self):
        for split in ("even", "auto", [5]):
            strategy = ReplicaStrategy(["/cpu:1"], split=split)
            self.assertEqual(strategy.split, (1.0,))
            self.assertTrue(strategy.extended.weights_rows)  # A factor of 1.

    @parameterized.named_parameters(
        ("unknown_string", "fast", ValueError, r"`split` must be .*Received: split='fast'"),
        (
            "wrong_length",
            [1, 2, 3],
            ValueError,
            r"2 devices, 3 weights\. Received: split=\[1, 2, 3\]",
        ),
        ("zero", [1, 0], ValueError, r"positive and finite.*Received: split=\[1, 0\]"),
        ("negative", (2, -1), ValueError, r"positive and finite.*Received: split=\(2, -1\)"),
        ("nan", [1, float("nan")], ValueError, r"positive and finite.*split=\[1, nan\]"),
        ("infinite", [1, float("inf")], ValueError, r"positive and finite.*split=\[1, inf\]"),
        ("string_weight", [1, "2"], TypeError, r"must be numbers.*Received: split=\[1, '2'\]"),
        ("bool_weight", [True, 1], TypeError, r"must be numbers.*Received: split=\[True, 1\]"),
        ("number", 2, TypeError, r"not a int\. Received: split=2"),
        ("bool", True, TypeError, r"not a bool\. Received: split=True"),
        ("none", None, TypeError, r"Received: split=None"),
        ("dict", {"a": 1}, TypeError, r"not a dict\. Received: split=\{'a': 1\}"),
    )
    def test_invalid_split_names_the_argument_and_echoes_it(self, split, error, message):
        with self.assertRaisesRegex(error, message):
            ReplicaStrategy(_TWO, split=split)

    def test_error_says_how_many_devices(self):
        with self.assertRaisesRegex(
            ValueError, r"one positive weight per replica device \(3 here\)"
        ):
            ReplicaStrategy(_THREE, split="uneven")

    def test_repr_shows_a_split_other_than_even(self):
        self.assertNotIn("split", repr(ReplicaStrategy(_TWO)))
        self.assertIn("split=(0.75, 0.25)", repr(ReplicaStrategy(_TWO, split=[3, 1])))
        self.assertIn("split='auto'", repr(ReplicaStrategy(_TWO, split="auto")))

    def test_split_state_is_no_model_state(self):
        # The fractions live in a plain variable that no strategy made: not mirrored, not
        # tracked by a model built in the scope.
        strategy = ReplicaStrategy(_TWO, split=[3, 1])
        with strategy.scope():
            other = ReplicaStrategy(_TWO, split="auto")
            model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
        fractions = other.extended._split.fractions
        self.assertIsInstance(fractions, tf.Variable)
        self.assertNotIsInstance(fractions, tf.distribute.DistributedValues)
        self.assertFalse(fractions.trainable)
        self.assertLen(model.weights, 2)

    def test_auto_under_op_determinism_is_refused_before_any_step(self):
        tf.config.experimental.enable_op_determinism()
        try:
            with self.assertRaisesRegex(ValueError, "op determinism.*split='auto'"):
                ReplicaStrategy(["/cpu:1", "/cpu:2"], split="auto")
            ReplicaStrategy(["/cpu:1", "/cpu:2"], split=[3, 1])  # Weights need no timing.
        finally:
            tf_config.disable_op_determinism()  # No public call turns it off.


class WeightedSplitSizesTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("three_to_one", 8, (0.75, 0.25), [6, 2]),
        ("rounding", 10, (0.5, 1 / 3, 1 / 6), [5, 3, 2]),
        ("tie_to_lower_index", 3, (0.5, 1 / 3, 1 / 6), [2, 1, 0]),
        ("smaller_than_replicas", 1, (0.25, 0.25, 0.5), [0, 0, 1]),
        ("empty", 0, (0.5, 0.5), [0, 0]),
        ("even_ties", 5, (0.5, 0.5), [3, 2]),
    )
    def test_examples(self, batch_size, fractions, sizes):
        self.assertEqual(batching.weighted_split_sizes(batch_size, fractions), sizes)
        self.assertEqual(
            batching.weighted_split_sizes_tensor(batch_size, fractions).numpy().tolist(), sizes
        )

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(batch_size=st.integers(0, 5000), weights=_weights)
    def test_sizes_sum_to_the_batch_each_within_one_row(self, batch_size, weights):
        fractions = split_lib.parse_split(weights, len(weights))
        sizes = batching.weighted_split_sizes(batch_size, fractions)
        self.assertEqual(sum(sizes), batch_size)
        for size, fraction in zip(sizes, fractions, strict=True):
            self.assertGreaterEqual(size, 0)
            self.assertLess(abs(size - batch_size * fraction), 1)

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(batch_size=st.integers(0, 5000), weights=_weights)
    def test_tensorflow_ops_give_the_same_sizes(self, batch_size, weights):
        fractions = split_lib.parse_split(weights, len(weights))
        self.assertEqual(
            batching.weighted_split_sizes_tensor(tf.constant(batch_size), fractions)
            .numpy()
            .tolist(),
            batching.weighted_split_sizes(batch_size, fractions),
        )

    def test_tensorflow_ops_in_a_function_with_a_dynamic_batch(self):
        @tf.function(input_signature=[tf.TensorSpec([], tf.int64)])
        def sizes(batch_size):
            return batching.weighted_split_sizes_tensor(batch_size, (0.3, 0.3, 0.4))

        for batch_size in (0, 1, 7, 10, 101):
            self.assertEqual(
                sizes(batch_size).numpy().tolist(),
                batching.weighted_split_sizes(batch_size, (0.3, 0.3, 0.4)),
            )

    @settings(max_examples=100, deadline=None, derandomize=True)
    @given(batch_size=st.integers(0, 100), num_replicas=st.integers(1, 5))
    def test_even_rule_is_unchanged(self, batch_size, num_replicas):
        # "even" keeps tf.distribute's ceil rule, not equal fractions.
        sizes = batching.split_sizes(batch_size, num_replicas)
        rows_per_replica = -(-batch_size // num_replicas)
        self.assertEqual(sum(sizes), batch_size)
        self.assertTrue(all(size <= rows_per_replica for size in sizes))

    def test_rejects_a_negative_batch(self):
        with self.assertRaisesRegex(ValueError, "batch_size=-1"):
            batching.weighted_split_sizes(-1, (1.0,))


if __name__ == "__main__":
    virtual_devices.configure()
    tf.test.main()
