"""Where the row weighting (`replica_strategy/_row_weights.py`) cannot reach, and what then.

Every row weighs 1/B by default (keras_test, tf_keras_test, multi_gpu_shim_test test that).
Here: models the weighting cannot reach get one warning naming them; losses that sum over the
batch need no weighting and get none; Keras renaming the private attribute the compiled
losses are read from fails loudly; the internal switch the benchmark uses turns it off. One
step of 3 rows (2, 1 on 2 replicas) is the partial batch that tells the weighting apart.
"""

import warnings

import keras_testing
import placements

# isort: split

import keras
import numpy as np
import tensorflow as tf
import tf_keras

from replica_strategy import _row_weights

_ROWS = 3  # Splits 2, 1 on two replicas.


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(_ROWS, 3)).astype("float32")
    return x, x @ np.array([[1.0], [-2.0], [0.5]], "float32")


class Keras3ComputeLoss(keras.Model):
    def compute_loss(self, *args, **kwargs):
        return super().compute_loss(*args, **kwargs)


class Keras3TrainStep(keras.Model):
    def train_step(self, data):
        return super().train_step(data)


class TfKerasComputeLoss(tf_keras.Model):
    def compute_loss(self, *args, **kwargs):
        return super().compute_loss(*args, **kwargs)


class TfKerasTrainStep(tf_keras.Model):
    def train_step(self, data):
        return super().train_step(data)


def _keras3(model_class=keras.Model, loss="mse"):
    keras.utils.set_random_seed(7)
    inputs = keras.Input((3,))
    model = model_class(inputs, keras.layers.Dense(1)(keras.layers.Dense(4)(inputs)))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    return model


def _tf_keras(model_class=tf_keras.Model, loss="mse"):
    tf_keras.utils.set_random_seed(7)
    inputs = tf_keras.Input((3,))
    outputs = tf_keras.layers.Dense(1)(tf_keras.layers.Dense(4)(inputs))
    model = model_class(inputs, outputs)
    model.compile(optimizer=tf_keras.optimizers.SGD(0.1), loss=loss)
    return model


def _fit_twice(model):
    """Two fits of the partial batch; the row-weighting warnings they raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            model.fit(*_data(), batch_size=_ROWS, epochs=1, shuffle=False, verbose=0)
    return [str(w.message) for w in caught if "cannot weigh every row" in str(w.message)]


class RowWeightingReachTest(tf.test.TestCase):
    def strategy(self):
        return placements.replica_strategy(placements.DEFAULT, 2)

    def assert_warned_once(self, model, about):
        messages = _fit_twice(model)
        self.assertLen(messages, 1)
        self.assertIn(repr(model.name), messages[0])
        self.assertIn(about, messages[0])
        self.assertIn("replica_row_fraction()", messages[0])

    def test_keras3_overrides_warn_once_per_model(self):
        for model_class, method in (
            (Keras3ComputeLoss, "compute_loss"),
            (Keras3TrainStep, "train_step"),
        ):
            with self.subTest(method):
                model = keras_testing.in_scope(self.strategy(), _keras3, model_class)
                self.assert_warned_once(model, f"overrides `{method}`")

    def test_tf_keras_overrides_warn_once_per_model(self):
        for model_class, method in (
            (TfKerasComputeLoss, "compute_loss"),
            (TfKerasTrainStep, "train_step"),
        ):
            with self.subTest(method):
                model = keras_testing.in_scope(self.strategy(), _tf_keras, model_class)
                self.assert_warned_once(model, f"overrides `{method}`")

    def test_a_reduction_the_weighting_cannot_correct_warns(self):
        loss = keras.losses.MeanSquaredError(reduction="mean_with_sample_weight")
        model = keras_testing.in_scope(self.strategy(), _keras3, loss=loss)
        self.assert_warned_once(model, "mean_with_sample_weight")

    def test_models_whose_losses_are_fine_do_not_warn(self):
        # Summed losses are exact without the weighting: Keras scales only means by 1/N.
        for build, loss in (
            (_keras3, "mse"),
            (_tf_keras, "mse"),
            (_keras3, keras.losses.MeanSquaredError(reduction="sum")),
            (_tf_keras, tf_keras.losses.MeanSquaredError(reduction="sum")),
        ):
            with self.subTest(f"{build.__name__} {loss}"):
                model = keras_testing.in_scope(self.strategy(), build, loss=loss)
                reference = build(loss=loss)
                self.assertEqual(_fit_twice(model), [])
                reference.fit(*_data(), batch_size=_ROWS, epochs=2, shuffle=False, verbose=0)
                self.assertLess(keras_testing.max_weight_difference(model, reference), 1e-6)

    def test_keras3_renamed_private_fails_loudly(self):
        model = keras_testing.in_scope(self.strategy(), _keras3)
        model.fit(*_data(), batch_size=_ROWS, verbose=0)
        del model._compile_loss._flat_losses  # As if Keras renamed it.
        with self.assertRaisesRegex(RuntimeError, r"CompileLoss\._flat_losses, which keras 3\."):
            model.fit(*_data(), batch_size=_ROWS, verbose=0)

    def test_tf_keras_renamed_private_fails_loudly(self):
        model = keras_testing.in_scope(self.strategy(), _tf_keras)
        model.fit(*_data(), batch_size=_ROWS, verbose=0)  # Builds the compiled losses.
        del model.compiled_loss._losses  # As if tf_keras renamed it.
        with self.assertRaisesRegex(RuntimeError, r"LossesContainer\._losses, which tf_keras 2\."):
            _row_weights.weighs_rows(model)

    def test_internal_switch_turns_the_weighting_off(self):
        # The benchmark's "without" side: tf.distribute's convention, which differs here.
        reference = _keras3()
        reference.fit(*_data(), batch_size=_ROWS, verbose=0)
        _row_weights._set_weighting(False)
        try:
            model = keras_testing.in_scope(self.strategy(), _keras3)
            model.fit(*_data(), batch_size=_ROWS, verbose=0)
        finally:
            _row_weights._set_weighting(True)
        self.assertGreater(keras_testing.max_weight_difference(model, reference), 1e-4)


if __name__ == "__main__":
    tf.test.main()
