"""The host's part of a step is a per-variable pipeline (benchmarks/host_pipeline.py).

Read from the executed step's partition graphs: with `mirror_weights` every write on the host
waits for its own variable's gradient alone and every new value sent back for its own update
alone, so TensorFlow's executor can overlap copies and updates across variables (the
`pipelined` row of benchmarks/scaling_model.py rests on this). A host-side global norm is the
counter-example the reading must catch.
"""

import virtual_devices  # noqa: F401  (splits the CPU into logical devices on import)

# isort: split
import keras
import tensorflow as tf
from tensorflow.python.eager import context

import replica_strategy
from benchmarks import host_pipeline, traffic

_LAYERS = 3  # hidden Dense layers: with the output layer, 8 trainable variables
_VARIABLES = 2 * (_LAYERS + 1)


class HostPipelineTest(tf.test.TestCase):
    def test_mirror_weights_updates_and_sends_each_variable_on_its_own(self):
        for replicas in (2, 4):
            for optimizer in ("adam", "fused_adam"):
                with self.subTest(replicas=replicas, optimizer=optimizer):
                    waits = host_pipeline.measure(replicas, True, optimizer, layers=_LAYERS)
                    # One summed gradient per variable reaches the host ...
                    self.assertEqual(waits.gradient_arrivals, _VARIABLES)
                    self.assertEqual(set(waits.write_waits), {1})
                    # ... and one new value per variable leaves it (the relay does the rest).
                    self.assertEqual(waits.weight_send_waits, (1,) * _VARIABLES)
                    self.assertTrue(waits.pipelined(arrivals_per_variable=1))

    def test_fused_adam_writes_each_variable_once(self):
        waits = host_pipeline.measure(2, True, "fused_adam", layers=_LAYERS)
        self.assertLen(waits.write_waits, _VARIABLES)

    def test_weight_decay_sends_each_new_value_once_with_fused_adam(self):
        # Keras decays each variable in an update of its own, so AdamW's weights leave the host
        # twice per step; FusedAdam decays inside its one update.
        keras_adamw = host_pipeline.measure(2, True, "adam+weight_decay", layers=_LAYERS)
        fused = host_pipeline.measure(2, True, "fused_adam+weight_decay", layers=_LAYERS)
        self.assertEqual(keras_adamw.float_sends, 2 * _VARIABLES)
        self.assertEqual(fused.float_sends, _VARIABLES)
        self.assertEqual(fused.weight_send_waits, (1,) * _VARIABLES)

    def test_default_mode_updates_each_variable_after_its_own_n_gradients(self):
        for replicas in (2, 4):
            with self.subTest(replicas=replicas):
                waits = host_pipeline.measure(replicas, False, "fused_adam", layers=_LAYERS)
                self.assertEqual(waits.gradient_arrivals, replicas * _VARIABLES)
                self.assertEqual(set(waits.write_waits), {replicas})
                self.assertEqual(waits.weight_send_waits, ())  # replicas read at next use

    def test_a_global_norm_on_the_host_is_a_barrier(self):
        strategy = replica_strategy.ReplicaStrategy(
            ["/cpu:1", "/cpu:2"], parameter_device="/cpu:0", mirror_weights=True
        )
        with strategy.scope():
            model = keras.Sequential(
                [keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)]
            )
            optimizer = replica_strategy.FusedAdam(1e-3)
            optimizer.build(model.trainable_variables)
        features = tf.ones((4, 4))

        def gradients():
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(model(features))
            return tape.gradient(loss, model.trainable_variables)

        @tf.function
        def step():
            per_replica = strategy.run(gradients)
            summed = [strategy.reduce("SUM", gradient, axis=None) for gradient in per_replica]
            clipped, _ = tf.clip_by_global_norm(summed, 1.0)  # joins every gradient first
            optimizer.apply_gradients(zip(clipped, model.trainable_variables))

        context.context().enable_run_metadata()
        try:
            step()
            run_metadata = context.context().export_run_metadata()
        finally:
            context.context().disable_run_metadata()
        waits = host_pipeline.host_waits(traffic.training_function_graph(run_metadata))
        # Every write waits for every gradient that reaches the host (some of the 4 variables'
        # gradients are constants here, folded on the host).
        self.assertGreater(waits.gradient_arrivals, 2)
        self.assertEqual(set(waits.write_waits), {waits.gradient_arrivals})
        self.assertFalse(waits.pipelined(arrivals_per_variable=2))


if __name__ == "__main__":
    tf.test.main()
