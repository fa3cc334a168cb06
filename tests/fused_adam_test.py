"""`FusedAdam`: Keras 3's Adam with each dense update as TensorFlow's fused `ResourceApplyAdam`.

Oracle: `keras.optimizers.Adam` trained the same way, under the same strategy (or none).
Runs on logical CPUs; with `mirror_weights` the host (parameter device) is /cpu:0 and the
replicas are /cpu:1 .. /cpu:N.
"""

import os

import virtual_devices

# isort: split

import fresh_keras_process
import keras
import numpy as np
import tensorflow as tf
from absl import logging
from absl.testing import parameterized

from replica_strategy import FusedAdam, ReplicaStrategy

_HOST = "/cpu:0"
_FEATURES = 3
_LEARNING_RATE = 0.02
# Float32 rounding of the same formula in a different order of operations, after a few steps.
_ATOL = 1e-5


def _replica_strategy(num_replicas, mirror_weights=False):
    devices = virtual_devices.cpus(num_replicas)
    if mirror_weights:  # The host apart from the replicas, as it is with GPUs.
        devices = [f"/cpu:{index}" for index in range(1, num_replicas + 1)]
    return ReplicaStrategy(devices, parameter_device=_HOST, mirror_weights=mirror_weights)


_STRATEGIES = (
    ("no_strategy", lambda: None),
    ("mirrored_two_replicas", lambda: virtual_devices.mirrored_strategy(2)),
    ("replica_one_replica", lambda: _replica_strategy(1)),
    ("replica_two_replicas", lambda: _replica_strategy(2)),
    ("replica_four_replicas", lambda: _replica_strategy(4)),
    ("mirror_weights_two_replicas", lambda: _replica_strategy(2, mirror_weights=True)),
    ("mirror_weights_four_replicas", lambda: _replica_strategy(4, mirror_weights=True)),
)


def _data(rows=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, _FEATURES)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]], "float32") + 0.1).astype("float32")
    return x, y


def _mlp(optimizer):
    """A small regression model with fixed initial weights (same seed => same weights)."""
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((_FEATURES,)),
            keras.layers.Dense(6, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=optimizer, loss="mse")
    return model


def _scope(strategy):
    return (strategy or tf.distribute.get_strategy()).scope()


def _fit(strategy, optimizer_class, build=_mlp, epochs=2, **optimizer_arguments):
    """Trains `build(optimizer)` with `fit`: 2 epochs of 4 steps of 12 rows."""
    x, y = _data()
    with _scope(strategy):
        model = build(optimizer_class(_LEARNING_RATE, **optimizer_arguments))
    model.fit(x, y, batch_size=12, epochs=epochs, shuffle=False, verbose=0)
    return model


def _max_difference(first, second):
    return max(float(np.abs(a - b).max()) for a, b in zip(first, second, strict=True))


def _tf_variable(variable):
    """The TensorFlow variable behind a Keras variable (or the variable itself)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


def _numpy(variables):
    return [np.asarray(_tf_variable(variable).numpy()) for variable in variables]


_STATE_KINDS = ("iteration", "learning_rate", "momentum", "velocity_hat", "velocity", "average")


def _slots(optimizer):
    """The optimizer's state, keyed by (position, kind), e.g. (2, "momentum").

    Adam's variables come in the same order in either class; their names and paths carry the
    layer's and the optimizer's own names, which differ from one model to the next.
    """
    return {
        (position, next(kind for kind in _STATE_KINDS if variable.name.endswith(kind))): (
            np.asarray(variable.numpy())
        )
        for position, variable in enumerate(optimizer.variables)
    }


def _operations(graph):
    """(type, device) of every op in `graph` and in the functions it calls, nested included."""
    found = [(operation.type, operation.device) for operation in graph.get_operations()]
    for function in graph.as_graph_def().library.function:
        found += [(node.op, node.device) for node in function.node_def]
    return found


def _devices_running(graph, op_type):
    """The devices ("CPU:0") of the ops of `op_type` in `graph`, or "" for unplaced ones."""
    return {
        device.rsplit("device:", 1)[-1]
        for operation, device in _operations(graph)
        if operation == op_type
    }


def _update_graph(strategy, optimizer_class, model_inputs, **optimizer_arguments):
    """The graph of one custom-loop step (`strategy.run` + `apply_gradients`), traced only."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = _mlp(optimizer_class(_LEARNING_RATE, **optimizer_arguments))
        model.optimizer.build(model.trainable_variables)
    step = _custom_step(strategy, model)
    x, y = model_inputs
    return step.get_concrete_function(tf.constant(x), tf.constant(y)).graph


def _custom_step(strategy, model):
    """One optimizer step on a global batch, as examples/train_custom_loop.py takes it."""
    optimizer = model.optimizer

    @tf.function
    def step(x, y):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                # Each replica's mean over the global batch: the gradients sum to the global one.
                loss = tf.reduce_sum(tf.square(model(x) - y)) / 12.0
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))

        strategy.run(replica_step, args=(x, y))

    return step


def _adam_of(model):
    """The model's Adam, inside its LossScaleOptimizer if it has one."""
    optimizer = model.optimizer
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.inner_optimizer
    return optimizer


class _TestCase(tf.test.TestCase, parameterized.TestCase):
    def assertMatchesAdam(self, fused, reference, atol=_ATOL):
        """Same weights and optimizer state as the Adam oracle, and training moved them."""
        fused_adam, adam = _adam_of(fused), _adam_of(reference)
        self.assertIsInstance(fused_adam, FusedAdam)
        self.assertNotIsInstance(adam, FusedAdam)
        weights = _max_difference(fused.get_weights(), reference.get_weights())
        fused_slots, reference_slots = _slots(fused_adam), _slots(adam)
        self.assertEqual(sorted(fused_slots), sorted(reference_slots))
        slots = _max_difference(
            [fused_slots[key] for key in sorted(fused_slots)],
            [reference_slots[key] for key in sorted(fused_slots)],
        )
        logging.info("%s: max difference weights %.3g, slots %.3g", self.id(), weights, slots)
        self.assertLess(weights, atol)
        self.assertLess(slots, atol)
        # Not a vacuous match: the optimizer trained, its moments are far from zero.
        momentums = [value for (_, kind), value in reference_slots.items() if kind == "momentum"]
        self.assertGreater(max(float(np.abs(value).max()) for value in momentums), 100 * atol)


class NumericsTest(_TestCase):
    """FusedAdam trains to Adam's weights and slots, to float32 rounding."""

    @parameterized.named_parameters(*_STRATEGIES)
    def test_fit_matches_adam(self, make_strategy):
        strategy = make_strategy()
        reference = _fit(strategy, keras.optimizers.Adam)
        fused = _fit(strategy, FusedAdam)
        self.assertMatchesAdam(fused, reference)

    @parameterized.named_parameters(
        ("no_strategy", lambda: None),
        ("replica_two_replicas", lambda: _replica_strategy(2)),
        ("mirror_weights_two_replicas", lambda: _replica_strategy(2, mirror_weights=True)),
    )
    def test_fit_with_amsgrad_matches_adam(self, make_strategy):
        # A short second-moment memory (beta_2=0.6) lets v fall as the gradients shrink, so
        # AMSGrad's running maximum matters: it moves the weights by 0.04 from plain Adam's.
        strategy = make_strategy()
        reference = _fit(strategy, keras.optimizers.Adam, amsgrad=True, beta_2=0.6)
        fused = _fit(strategy, FusedAdam, amsgrad=True, beta_2=0.6)
        self.assertMatchesAdam(fused, reference)
        plain = _fit(strategy, FusedAdam, beta_2=0.6)
        self.assertGreater(_max_difference(plain.get_weights(), fused.get_weights()), 0.01)

    @parameterized.named_parameters(
        ("no_strategy", lambda: None),
        ("replica_two_replicas", lambda: _replica_strategy(2)),
        ("mirror_weights_two_replicas", lambda: _replica_strategy(2, mirror_weights=True)),
    )
    def test_weight_decay_clipping_and_ema_match_adam(self, make_strategy):
        # Keras applies these around `update_step`, so FusedAdam takes them as Adam does.
        strategy = make_strategy()
        options = dict(weight_decay=0.05, global_clipnorm=0.5, use_ema=True)
        reference = _fit(strategy, keras.optimizers.Adam, **options)
        fused = _fit(strategy, FusedAdam, **options)
        self.assertMatchesAdam(fused, reference)
        self.assertTrue(any(kind == "average" for _, kind in _slots(fused.optimizer)))

    @parameterized.named_parameters(
        ("replica_two_replicas", lambda: _replica_strategy(2)),
        ("mirror_weights_four_replicas", lambda: _replica_strategy(4, mirror_weights=True)),
        ("mirrored_two_replicas", lambda: virtual_devices.mirrored_strategy(2)),
    )
    def test_custom_loop_matches_adam(self, make_strategy):
        strategy = make_strategy()
        x, y = _data()
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(12)
        models = []
        for optimizer_class in (keras.optimizers.Adam, FusedAdam):
            with strategy.scope():
                model = _mlp(optimizer_class(_LEARNING_RATE))
                model.optimizer.build(model.trainable_variables)
            step = _custom_step(strategy, model)
            for _ in range(2):
                for batch in strategy.experimental_distribute_dataset(dataset):
                    step(*batch)
            self.assertEqual(int(model.optimizer.iterations.numpy()), 8)
            models.append(model)
        reference, fused = models
        self.assertMatchesAdam(fused, reference)

    @parameterized.named_parameters(
        ("policy_no_strategy", lambda: None, False),
        ("policy_replica_two_replicas", lambda: _replica_strategy(2), False),
        ("policy_mirror_weights", lambda: _replica_strategy(2, mirror_weights=True), False),
        ("loss_scale_optimizer_replica", lambda: _replica_strategy(2), True),
    )
    def test_mixed_float16_matches_adam(self, make_strategy, wrap_explicitly):
        # Under "mixed_float16" `compile` wraps the optimizer in a LossScaleOptimizer; the
        # other case wraps it by hand. The variables, hence the update, stay float32.
        keras.mixed_precision.set_global_policy("mixed_float16")
        self.addCleanup(keras.mixed_precision.set_global_policy, "float32")
        strategy = make_strategy()

        def optimizer(optimizer_class):
            inner = optimizer_class(_LEARNING_RATE)
            return keras.optimizers.LossScaleOptimizer(inner) if wrap_explicitly else inner

        models = []
        for optimizer_class in (keras.optimizers.Adam, FusedAdam):
            x, y = _data()
            with _scope(strategy):
                model = _mlp(optimizer(optimizer_class))
            model.fit(x, y, batch_size=12, epochs=2, shuffle=False, verbose=0)
            self.assertIsInstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
            self.assertIsInstance(model.optimizer.inner_optimizer, optimizer_class)
            models.append(model)
        reference, fused = models
        # The float16 forward pass turns float32 rounding differences in the weights (~1e-6)
        # into float16 rounding differences in the gradients: 2e-5 in a momentum of 1.1 here.
        self.assertMatchesAdam(fused, reference, atol=1e-4)


class XlaTest(_TestCase):
    """`jit_compile=True`, Keras' default on a GPU without a strategy, compiles the update."""

    @parameterized.named_parameters(("adam", False), ("amsgrad", True))
    def test_jit_compiled_fit_matches_adam(self, amsgrad):
        def compiled(optimizer):
            model = _mlp(optimizer)
            model.compile(optimizer=optimizer, loss="mse", jit_compile=True)
            return model

        options = dict(amsgrad=amsgrad, beta_2=0.6, weight_decay=0.05)
        reference = _fit(None, keras.optimizers.Adam, build=compiled, **options)
        fused = _fit(None, FusedAdam, build=compiled, **options)
        self.assertTrue(fused.jit_compile)
        self.assertMatchesAdam(fused, reference)


class FusedKernelTest(_TestCase):
    """The dense update is TensorFlow's fused kernel; Keras' Adam runs none (the control)."""

    @parameterized.named_parameters(
        ("no_strategy", lambda: None, 1),
        ("replica_two_replicas", lambda: _replica_strategy(2), 1),
        ("mirrored_two_replicas", lambda: virtual_devices.mirrored_strategy(2), 2),
    )
    def test_the_update_is_one_fused_kernel_per_variable(self, make_strategy, copies):
        graph = _update_graph(make_strategy(), FusedAdam, _data(12))
        operations = [operation for operation, _ in _operations(graph)]
        # Four variables (two kernels, two biases), each updated once per copy of it.
        self.assertEqual(operations.count("ResourceApplyAdam"), 4 * copies)
        self.assertNotIn("ResourceApplyAdamWithAmsgrad", operations)

    def test_amsgrad_takes_keras_update(self):
        # XLA has no kernel for ResourceApplyAdamWithAmsgrad (see XlaTest).
        graph = _update_graph(_replica_strategy(2), FusedAdam, _data(12), amsgrad=True)
        operations = {operation for operation, _ in _operations(graph)}
        self.assertNoCommonElements(
            operations, {"ResourceApplyAdam", "ResourceApplyAdamWithAmsgrad"}
        )

    @parameterized.named_parameters(("two_replicas", 2), ("four_replicas", 4))
    def test_with_mirror_weights_the_kernel_runs_on_the_host(self, num_replicas):
        strategy = _replica_strategy(num_replicas, mirror_weights=True)
        graph = _update_graph(strategy, FusedAdam, _data(12))
        self.assertEqual(_devices_running(graph, "ResourceApplyAdam"), {"CPU:0"})

    @parameterized.named_parameters(("fused_adam", False), ("fused_amsgrad", True))
    def test_keras_adam_runs_no_fused_kernel(self, amsgrad):
        # The control: the assertions above would fail for Keras' own update.
        graph = _update_graph(
            _replica_strategy(2), keras.optimizers.Adam, _data(12), amsgrad=amsgrad
        )
        operations = {operation for operation, _ in _operations(graph)}
        self.assertNoCommonElements(
            operations, {"ResourceApplyAdam", "ResourceApplyAdamWithAmsgrad"}
        )


def _embedding_model(optimizer):
    """Embedding (sparse gradients) into a Dense layer (dense gradients)."""
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((2,), dtype="int32"),
            keras.layers.Embedding(20, 3),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=optimizer, loss="mse")
    return model


class SparseFallbackTest(_TestCase):
    """`tf.IndexedSlices` gradients take Keras' own update: rows never looked up stay as they were."""

    _UNUSED_ROWS = range(10, 20)

    def _fit(self, strategy, optimizer_class):
        rng = np.random.default_rng(1)
        x = rng.integers(0, 10, size=(48, 2)).astype("int32")  # Rows 10..19 are never looked up.
        y = rng.normal(size=(48, 1)).astype("float32")
        with _scope(strategy):
            model = _embedding_model(optimizer_class(_LEARNING_RATE))
        initial = model.layers[0].embeddings.numpy()
        model.fit(x, y, batch_size=12, epochs=2, shuffle=False, verbose=0)
        return model, initial

    @parameterized.named_parameters(
        ("no_strategy", lambda: None),
        ("replica_two_replicas", lambda: _replica_strategy(2)),
        ("mirror_weights_two_replicas", lambda: _replica_strategy(2, mirror_weights=True)),
    )
    def test_embedding_matches_adam_and_keeps_unused_rows(self, make_strategy):
        strategy = make_strategy()
        reference, _ = self._fit(strategy, keras.optimizers.Adam)
        fused, initial = self._fit(strategy, FusedAdam)
        self.assertMatchesAdam(fused, reference)
        trained = fused.layers[0].embeddings.numpy()
        unused = list(self._UNUSED_ROWS)
        self.assertAllEqual(trained[unused], initial[unused])
        self.assertNotAllClose(trained[:10], initial[:10])

    def test_only_the_dense_variables_take_the_fused_kernel(self):
        with tf.distribute.get_strategy().scope():
            model = _embedding_model(FusedAdam(_LEARNING_RATE))

        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(model(x) - y))
            gradients = tape.gradient(loss, model.trainable_variables)
            self.assertIsInstance(gradients[0], tf.IndexedSlices)
            model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))

        graph = step.get_concrete_function(tf.zeros([4, 2], tf.int32), tf.zeros([4, 1])).graph
        operations = [operation for operation, _ in _operations(graph)]
        self.assertEqual(operations.count("ResourceApplyAdam"), 2)  # Dense's kernel and bias


class CheckpointTest(_TestCase):
    """Adam's and FusedAdam's checkpoints are interchangeable: same slots, same names."""

    @parameterized.named_parameters(
        ("adam_into_fused_adam", keras.optimizers.Adam, FusedAdam),
        ("fused_adam_into_adam", FusedAdam, keras.optimizers.Adam),
    )
    def test_checkpoint_restores_into_the_other(self, written_by, restored_into):
        trained = _fit(None, written_by)
        prefix = tf.train.Checkpoint(model=trained, optimizer=trained.optimizer).write(
            os.path.join(self.get_temp_dir(), "ckpt")
        )
        fresh = _mlp(restored_into(_LEARNING_RATE))
        fresh.optimizer.build(fresh.trainable_variables)
        status = tf.train.Checkpoint(model=fresh, optimizer=fresh.optimizer).read(prefix)
        status.assert_consumed()
        self.assertIsInstance(fresh.optimizer, restored_into)
        self.assertEqual(int(fresh.optimizer.iterations.numpy()), 8)
        self.assertEqual(_max_difference(fresh.get_weights(), trained.get_weights()), 0.0)
        self.assertEqual(sorted(_slots(fresh.optimizer)), sorted(_slots(trained.optimizer)))
        for key, value in _slots(trained.optimizer).items():
            self.assertAllEqual(_slots(fresh.optimizer)[key], value, msg=key)

    def test_training_goes_on_as_adam_would_after_a_restore(self):
        # Adam for 2 epochs, then either optimizer for 2 more: the same weights.
        x, y = _data()
        trained = _fit(None, keras.optimizers.Adam)
        prefix = tf.train.Checkpoint(model=trained, optimizer=trained.optimizer).write(
            os.path.join(self.get_temp_dir(), "ckpt")
        )
        continued = []
        for optimizer_class in (keras.optimizers.Adam, FusedAdam):
            model = _mlp(optimizer_class(_LEARNING_RATE))
            model.optimizer.build(model.trainable_variables)
            tf.train.Checkpoint(model=model, optimizer=model.optimizer).read(prefix)
            model.fit(x, y, batch_size=12, epochs=2, shuffle=False, verbose=0)
            self.assertEqual(int(model.optimizer.iterations.numpy()), 16)
            continued.append(model)
        self.assertMatchesAdam(continued[1], continued[0])

    @parameterized.named_parameters(
        ("no_strategy", lambda: None),
        ("mirror_weights_two_replicas", lambda: _replica_strategy(2, mirror_weights=True)),
    )
    def test_keras_file_loads_as_fused_adam(self, make_strategy):
        trained = _fit(make_strategy(), FusedAdam, amsgrad=True, epsilon=1e-6)
        path = os.path.join(self.get_temp_dir(), "model.keras")
        trained.save(path)
        loaded = keras.models.load_model(path)
        self.assertIsInstance(loaded.optimizer, FusedAdam)
        self.assertEqual(loaded.optimizer.get_config(), trained.optimizer.get_config())
        self.assertTrue(loaded.optimizer.get_config()["amsgrad"])
        self.assertEqual(_max_difference(loaded.get_weights(), trained.get_weights()), 0.0)
        for key, value in _slots(trained.optimizer).items():
            self.assertAllEqual(_slots(loaded.optimizer)[key], value, msg=key)


class KerasFileInAFreshProcessTest(_TestCase):
    """What docs/keras.md says loads where: a `.keras` file of FusedAdam, loaded by a new process.

    The oracle for the training after loading is the saved model, trained on in this process.
    """

    def _save_then_train_on(self, strategy):
        """(path of the saved file, weights and state as saved, trained on, the next epoch)."""
        trained = _fit(strategy, FusedAdam)
        path = os.path.join(self.get_temp_dir(), "model.keras")
        trained.save(path)
        saved = {"weight": trained.get_weights(), "optimizer": _numpy(trained.optimizer.variables)}
        x, y = _data(seed=1)
        trained.fit(x, y, batch_size=12, epochs=1, shuffle=False, verbose=0)
        continued = {
            "weight": trained.get_weights(),
            "optimizer": _numpy(trained.optimizer.variables),
        }
        return path, saved, continued, (x, y)

    def _assert_state(self, loaded, saved, continued, atol):
        for kind in ("weight", "optimizer"):
            for index, (ours, expected) in enumerate(
                zip(loaded["loaded"][kind], saved[kind], strict=True)
            ):
                self.assertAllEqual(ours, expected, msg=f"loaded {kind} {index}")
            for index, (ours, expected) in enumerate(
                zip(loaded["trained"][kind], continued[kind], strict=True)
            ):
                self.assertAllClose(
                    ours, expected, atol=atol, rtol=0, msg=f"trained {kind} {index}"
                )

    @parameterized.named_parameters(
        ("no_strategy", lambda: None),
        ("mirror_weights_two_replicas", lambda: _replica_strategy(2, mirror_weights=True)),
    )
    def test_keras_alone_loads_it_as_keras_adam_and_trains_on(self, make_strategy):
        path, saved, continued, (x, y) = self._save_then_train_on(make_strategy())
        report, loaded = fresh_keras_process.load_and_train(
            path,
            x,
            y,
            12,
            self.get_temp_dir(),
            keras_alone=True,
            custom_objects={"replica_strategy>FusedAdam": "Adam"},
        )
        self.assertEmpty(report["imported"])
        # Without `custom_objects`, Keras cannot find the class: docs/keras.md says so.
        self.assertIn("Could not locate class 'FusedAdam'", report["plain_load_error"])
        adam = keras.optimizers.Adam
        self.assertEqual(report["optimizer_class"], f"{adam.__module__}.{adam.__qualname__}")
        self.assertEqual(int(loaded["trained"]["optimizer"][0]), 12)  # 8 steps saved, 4 more
        # Keras' Adam trains on from FusedAdam's state as FusedAdam does, to float32 rounding.
        self._assert_state(loaded, saved, continued, atol=_ATOL)

    def test_with_replica_strategy_imported_it_loads_as_fused_adam(self):
        path, saved, continued, (x, y) = self._save_then_train_on(
            _replica_strategy(2, mirror_weights=True)
        )
        report, loaded = fresh_keras_process.load_and_train(
            path, x, y, 12, self.get_temp_dir(), keras_alone=False
        )
        self.assertIn("replica_strategy", report["imported"])
        self.assertIsNone(report["plain_load_error"])
        self.assertEqual(report["optimizer_class"], "replica_strategy.fused_adam.FusedAdam")
        self.assertEqual(int(loaded["trained"]["optimizer"][0]), 12)
        # Trained on with no strategy, against two replicas here: float32 rounding apart.
        self._assert_state(loaded, saved, continued, atol=_ATOL)


class InvariantsTest(_TestCase):
    @parameterized.named_parameters(*_STRATEGIES)
    def test_iterations_count_one_per_step(self, make_strategy):
        fused = _fit(make_strategy(), FusedAdam, epochs=3)
        self.assertEqual(int(fused.optimizer.iterations.numpy()), 12)  # 3 epochs of 4 steps

    @parameterized.named_parameters(*_STRATEGIES)
    def test_one_step_is_exactly_one_adam_step(self, make_strategy):
        # A known gradient g, split evenly across the replicas (they sum it back to g). From
        # zero moments, one Adam step gives m = (1 - beta_1) g, v = (1 - beta_2) g^2 and
        # w1 = w0 - lr sqrt(1 - beta_2) / (1 - beta_1) * m / (sqrt(v) + epsilon): about
        # lr * sign(g). An update applied twice would give about twice that, and other moments.
        strategy = make_strategy() or tf.distribute.get_strategy()
        with strategy.scope():
            weight = tf.Variable(np.array([1.0, -2.0, 0.5, 3.0], "float32"))
            optimizer = FusedAdam(_LEARNING_RATE)
            optimizer.build([weight])
        gradient = np.array([0.3, -1.5, 2.0, 1e-4], "float32")

        @tf.function
        def step():
            def replica_step():
                share = tf.distribute.get_replica_context().num_replicas_in_sync
                optimizer.apply_gradients([(tf.constant(gradient) / share, weight)])

            strategy.run(replica_step)

        step()
        # The oracle in float32, as the optimizer holds beta_1, beta_2 (1 - 0.999 is 0.99998713e-3
        # there: the 1.3e-5 relative difference a float64 oracle would see in v).
        beta_1, beta_2, epsilon, learning_rate = (
            np.float32(value)
            for value in (optimizer.beta_1, optimizer.beta_2, optimizer.epsilon, _LEARNING_RATE)
        )
        m = (1 - beta_1) * gradient
        v = (1 - beta_2) * gradient**2
        alpha = learning_rate * np.sqrt(1 - beta_2) / (1 - beta_1)
        expected = np.array([1.0, -2.0, 0.5, 3.0], "float32") - alpha * m / (np.sqrt(v) + epsilon)
        self.assertEqual(int(optimizer.iterations.numpy()), 1)
        self.assertAllClose(_numpy([weight])[0], expected, atol=1e-7, rtol=0)
        slots = _slots(optimizer)
        self.assertAllClose(slots[2, "momentum"], m, atol=0, rtol=1e-6)
        self.assertAllClose(slots[3, "velocity"], v, atol=0, rtol=1e-6)


if __name__ == "__main__":
    tf.test.main()
