"""One worker of tests/multi_worker_replica_test.py: `python this.py MODE OUTPUT_DIR`.

TF_CONFIG says which worker. Modes:
- train: a custom loop and Keras `fit`, each with the weights on the parameter device and with
  `mirror_weights=True`; saves, per run, the initial and final weights of this worker and of
  one device trained on the same global batches (the last one leaves worker 1 without rows).
- run_forever: trains until killed (the fault test kills a peer).
- disagree: worker 1 asks for mirror_weights=True, worker 0 not.
- start: only makes the strategy (the bad-port test).
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf

import replica_strategy

# Two logical CPUs, without listing devices: that would start the runtime before the strategy
# configures collective ops (replica_strategy.logical_devices.split_cpu lists them).
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)


ROWS, BATCH = 25, 8  # Global batches of 8, 8, 8 and 1: the last leaves a worker no rows.


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]], "float32") + 0.3).astype("float32")
    return x, y


def _model(seed):
    import keras

    keras.utils.set_random_seed(seed)  # Different on each worker: the chief's values win.
    return keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)]
    )


def _batches():
    x, y = _data()
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, ROWS, BATCH)]


def _dataset():
    x, y = _data()
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)


def _one_device(initial, epochs):
    import keras

    model = _model(0)
    model.set_weights(initial)
    optimizer = keras.optimizers.SGD(0.1)
    for _ in range(epochs):
        for x, y in _batches():
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(model(x) - y))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return model.get_weights()


def custom_loop(strategy, seed, epochs=2, announce=False):
    import keras

    with strategy.scope():
        model = _model(seed)
        optimizer = keras.optimizers.SGD(0.1)
    initial = model.get_weights()

    @tf.function
    def step(inputs, global_rows):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(model(x) - y)) / global_rows
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        losses = strategy.run(replica_step, args=inputs)
        return strategy.reduce("SUM", losses, axis=None)

    distributed = strategy.experimental_distribute_dataset(_dataset())
    rows_here = []  # This worker's rows in each global batch.
    for _ in range(epochs):
        for inputs, (x, _) in zip(distributed, _batches(), strict=True):
            rows_here.append(
                sum(int(part.shape[0]) for part in strategy.experimental_local_results(inputs[0]))
            )
            step(inputs, tf.constant(float(len(x))))
            if announce and len(rows_here) == 2:
                print("TRAINING", flush=True)  # Past start-up: the fault test kills a peer now.
    return initial, model.get_weights(), rows_here


def input_pipelines(strategy):
    """What `distribute_datasets_from_function` tells this worker's dataset function, and the
    rows each of this worker's replicas gets in the first step."""
    seen = []

    def dataset_fn(input_context):
        seen.extend(
            [
                input_context.num_input_pipelines,
                input_context.input_pipeline_id,
                input_context.num_replicas_in_sync,
            ]
        )
        x, y = _data()
        return (
            tf.data.Dataset.from_tensor_slices((x, y))
            .shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
            .batch(input_context.get_per_replica_batch_size(12))  # 12: splits over 4 or 6
        )

    inputs = next(iter(strategy.distribute_datasets_from_function(dataset_fn)))
    rows = [int(part.shape[0]) for part in strategy.experimental_local_results(inputs[0])]
    return np.array(seen + rows)


def keras_fit(strategy, seed, epochs=2):
    import keras

    with strategy.scope():
        model = _model(seed)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    replica_strategy.exact_uneven_batches(model)
    initial = model.get_weights()
    model.fit(_dataset(), epochs=epochs, verbose=0)
    # Every worker's rows, in the dataset's order (Keras' multi-worker path, adapted).
    predictions = model.predict(_dataset(), verbose=0)
    loss = model.evaluate(_dataset(), verbose=0, return_dict=True)["loss"]
    return initial, model.get_weights(), [predictions, np.array(loss)]


def main(mode, output_dir):
    index = int(json.loads(os.environ["TF_CONFIG"])["task"]["index"])
    devices = ["/cpu:0", "/cpu:1"]
    if mode == "start":
        replica_strategy.MultiWorkerReplicaStrategy(devices)
        return
    if mode == "disagree":
        replica_strategy.MultiWorkerReplicaStrategy(devices, mirror_weights=index == 1)
        print("NOT REACHED: the strategy raises on both workers", flush=True)
        return
    if mode == "run_forever":
        strategy = replica_strategy.MultiWorkerReplicaStrategy(devices, heartbeat_timeout_seconds=5)
        custom_loop(strategy, index, epochs=10**6, announce=True)
        return
    results = {}
    for name, train in (("custom_loop", custom_loop), ("keras_fit", keras_fit)):
        for mirror_weights in (False, True):
            strategy = replica_strategy.MultiWorkerReplicaStrategy(
                devices, mirror_weights=mirror_weights
            )
            workers = len(json.loads(os.environ["TF_CONFIG"])["cluster"]["worker"])
            assert strategy.num_replicas_in_sync == 2 * workers, strategy.num_replicas_in_sync
            initial, final, extra = train(strategy, seed=10 + index)
            run = f"{name}_{'mirrored' if mirror_weights else 'parameter'}"
            if name == "custom_loop":
                results[f"{run}/rows"] = [np.array(extra), input_pipelines(strategy)]
            else:
                results[f"{run}/predictions"] = extra
                reference = _model(0)
                reference.set_weights(final)
                x, y = _data()
                expected = reference.predict(x, verbose=0)
                results[f"{run}/one_device_predictions"] = [
                    expected,
                    np.array(np.mean(np.square(expected - y))),
                ]
            results[f"{run}/initial"] = initial
            results[f"{run}/final"] = final
            results[f"{run}/one_device"] = _one_device(initial, epochs=2)
    flat = {
        f"{key}/{position}": value
        for key, weights in results.items()
        for position, value in enumerate(weights)
    }
    np.savez(os.path.join(output_dir, f"worker{index}.npz"), **flat)
    print("DONE", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ".")
