"""The adaptations of Keras and tf_keras (`replica_strategy/_adapters.py`).

Each relies on an upstream internal listed in docs/development.md. These tests fail loudly
when upstream moves one: the function is gone, its signature lost the argument the adapter
reads, or the adapter is no longer on the class. Behaviour is tested where it is used
(keras3_optimizer_test, keras3_loss_scale_test, tf_keras_optimizer_test, keras_test,
tf_keras_test).
"""

import inspect
import os
import subprocess
import sys
import textwrap

import virtual_devices

# isort: split

import tensorflow as tf
from keras.src.backend.tensorflow import trainer as keras3_tf_trainer
from keras.src.backend.tensorflow.optimizer import TFOptimizer
from keras.src.backend.tensorflow.trainer import TensorFlowTrainer
from keras.src.optimizers.loss_scale_optimizer import LossScaleOptimizer
from tf_keras.src import callbacks as tf_keras_callbacks
from tf_keras.src.engine import training as tf_keras_training
from tf_keras.src.mixed_precision import loss_scale_optimizer
from tf_keras.src.optimizers import optimizer as tf_keras_optimizer
from tf_keras.src.optimizers.legacy import optimizer_v2

from replica_strategy import ReplicaStrategy, _adapters

_MARKS = {
    (TFOptimizer, "_clip_gradients"): "_replica_strategy_clips_after_sum",
    (TensorFlowTrainer, "_maybe_symbolic_build"): "_replica_strategy_builds_from_first_replica",
    (LossScaleOptimizer, "_tf_apply"): "_replica_strategy_skips_on_any_replica",
    (keras3_tf_trainer, "_collective_all_reduce_multi_worker"): "_replica_strategy_multi_worker",
    (optimizer_v2.OptimizerV2, "apply_gradients"): "_replica_strategy_checks_aggregation",
    (tf_keras_optimizer.Optimizer, "apply_gradients"): "_replica_strategy_checks_aggregation",
    (tf_keras_training.Model, "compute_loss"): "_replica_strategy_weights_rows",
    (TensorFlowTrainer, "make_train_function"): "_replica_strategy_checks_row_weighting",
    (tf_keras_training.Model, "make_train_function"): "_replica_strategy_checks_row_weighting",
}


def _parameters(function):
    return inspect.signature(inspect.unwrap(function)).parameters


class UpstreamInternalsTest(tf.test.TestCase):
    def test_keras3_internals_are_where_the_adapters_expect(self):
        self.assertIn("grads", _parameters(TFOptimizer._clip_gradients))
        self.assertIn("grads_and_vars", _parameters(TFOptimizer._all_reduce_sum_gradients))
        self.assertIn("iterator", _parameters(TensorFlowTrainer._maybe_symbolic_build))
        self.assertIn("data_batch", _parameters(TensorFlowTrainer._maybe_symbolic_build))
        self.assertIn("force", _parameters(TensorFlowTrainer.make_train_function))
        # Keras clips before it sums: the order the Keras 3 adapter reverses.
        source = inspect.getsource(TFOptimizer._backend_update_step)
        self.assertIn("_all_reduce_sum_gradients", source)
        from keras.src.optimizers import base_optimizer

        source = inspect.getsource(base_optimizer.BaseOptimizer._backend_apply_gradients)
        self.assertLess(source.index("_clip_gradients"), source.index("_backend_update_step"))
        # The build-time reduce the trainer adapter marks.
        source = inspect.getsource(inspect.unwrap(TensorFlowTrainer._maybe_symbolic_build))
        self.assertIn('reduce(\n                        "MEAN"', source)
        # The loss-scale adapter replaces `_tf_apply`, which `apply` calls under TensorFlow, and
        # calls the methods `_tf_apply` calls.
        self.assertIn("self._tf_apply(", inspect.getsource(LossScaleOptimizer.apply))
        self.assertIn("trainable_variables", _parameters(LossScaleOptimizer._tf_apply))
        self.assertIn("grads", _parameters(LossScaleOptimizer.check_finite))
        self.assertIn(
            "trainable_variables", _parameters(LossScaleOptimizer._stateful_handle_finite_grads)
        )
        self.assertEqual(
            list(_parameters(LossScaleOptimizer._stateful_handle_non_finite_grads)), ["self"]
        )

    def test_keras3_multi_worker_test_is_where_the_adapter_expects(self):
        # reduce_per_replica looks the test up at call time, in its module: the adapter
        # replaces the module's function.
        source = inspect.getsource(keras3_tf_trainer.reduce_per_replica)
        self.assertIn("_collective_all_reduce_multi_worker(strategy)", source)
        self.assertIn("strategy.gather(", inspect.getsource(keras3_tf_trainer._multi_worker_concat))
        self.assertEqual(
            list(_parameters(keras3_tf_trainer._collective_all_reduce_multi_worker)), ["strategy"]
        )

    def test_tf_keras_internals_are_where_the_adapters_expect(self):
        self.assertIn(
            "experimental_aggregate_gradients",
            _parameters(optimizer_v2.OptimizerV2.apply_gradients),
        )
        self.assertIn(
            "skip_gradients_aggregation", _parameters(tf_keras_optimizer.Optimizer.apply_gradients)
        )
        self.assertIn("y_pred", _parameters(tf_keras_training.Model.compute_loss))
        self.assertIn("force", _parameters(tf_keras_training.Model.make_train_function))
        self.assertTrue(callable(loss_scale_optimizer.strategy_supports_loss_scaling))
        self.assertTrue(
            hasattr(
                tf_keras_callbacks.BackupAndRestore(self.get_temp_dir()), "_supported_strategies"
            )
        )

    def test_a_strategy_installs_every_adapter_once(self):
        ReplicaStrategy(virtual_devices.cpus(2))
        installed = {(cls, name): getattr(cls, name) for cls, name in _MARKS}
        _adapters.install()  # Idempotent: nothing is wrapped twice.
        for (cls, name), mark in _MARKS.items():
            method = getattr(cls, name)
            self.assertTrue(getattr(method, mark, False), f"{cls.__name__}.{name}")
            self.assertIs(method, installed[(cls, name)])
            # One wrapper deep: the wrapped function is upstream's own.
            self.assertFalse(getattr(method.__wrapped__, mark, False), f"{cls.__name__}.{name}")


class InstallTimeTest(tf.test.TestCase):
    def test_importing_the_package_adapts_nothing(self):
        # Upstream classes change only once a ReplicaStrategy exists: importing
        # replica_strategy alone leaves Keras and tf_keras as they are.
        script = textwrap.dedent(
            """
            import tf_keras
            from keras.src.backend.tensorflow.optimizer import TFOptimizer
            from tf_keras.src.optimizers.legacy import optimizer_v2
            import replica_strategy

            assert not hasattr(TFOptimizer._clip_gradients, "__wrapped__")
            assert not hasattr(optimizer_v2.OptimizerV2.apply_gradients, "__wrapped__")
            replica_strategy.ReplicaStrategy(["/cpu:0"])
            assert hasattr(TFOptimizer._clip_gradients, "__wrapped__")
            assert hasattr(optimizer_v2.OptimizerV2.apply_gradients, "__wrapped__")
            print("ok")
            """
        )
        result = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
            check=False,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertIn("ok", result.stdout)

    def test_tf_keras_imported_after_the_strategy_is_adapted_in_its_scope(self):
        script = textwrap.dedent(
            """
            import replica_strategy

            strategy = replica_strategy.ReplicaStrategy(["/cpu:0"])
            import tf_keras
            from tf_keras.src.optimizers.legacy import optimizer_v2

            assert not hasattr(optimizer_v2.OptimizerV2.apply_gradients, "__wrapped__")
            with strategy.scope():
                pass
            assert hasattr(optimizer_v2.OptimizerV2.apply_gradients, "__wrapped__")
            print("ok")
            """
        )
        result = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
            check=False,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertIn("ok", result.stdout)


if __name__ == "__main__":
    tf.test.main()
